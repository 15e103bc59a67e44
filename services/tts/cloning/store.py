"""Speaker profiles are computed once per voice sample and reused: keyed by the sample's sha256.

`profile_key(sha)` is the object-storage key (voices/<sha256>.r<build revision>.profile) the gateway
uses; `ProfileCache` is the embedded pipeline's equivalent: memory plus a directory
(LIKENESS_VOICE_CACHE_DIR, default ~/.cache/likeness/voices; empty disables the disk cache) holding
files of the same name. The build revision in the name (profile.BUILD_REVISION) makes a better
cloning method rebuild profiles instead of reusing ones an older method built; a profile another
LIKENESS_CLONE_METHOD built (SpeakerProfile.method) is rebuilt too (`is_current`). The object store's
copy is checked the same way by the TTS service (BuildSpeakerProfile reuses only a current one).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from services.common import config
from services.common.domain.errors import InputError
from services.tts.cloning.cloner import configured_method, sample_sha256
from services.tts.cloning.profile import BUILD_REVISION, SpeakerProfile


def profile_key(sample_sha256: str) -> str:
    return f"voices/{sample_sha256}.r{BUILD_REVISION}.profile"


def is_current(profile: SpeakerProfile) -> bool:
    """Built the way profiles are built now (the revision is in the name; the method is inside)."""
    return profile.method == configured_method()


class ProfileCache:
    _memory: dict[str, SpeakerProfile] = {}
    _lock = threading.Lock()

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    @classmethod
    def from_env(cls) -> "ProfileCache":
        raw = config.get_str("LIKENESS_VOICE_CACHE_DIR")
        return cls(Path(raw).expanduser() if raw.strip() else None)

    def get_or_build(self, sample: bytes, build: Callable[[bytes], SpeakerProfile]) -> SpeakerProfile:
        sha = sample_sha256(sample)
        with self._lock:
            if sha in self._memory and is_current(self._memory[sha]):
                return self._memory[sha]
        path = self.directory / Path(profile_key(sha)).name if self.directory else None
        profile = None
        if path is not None and path.is_file():
            try:
                profile = SpeakerProfile.from_bytes(path.read_bytes(), "voice_sample")
            except InputError:  # an old or damaged cache entry: rebuild it
                profile = None
            if profile is not None and not is_current(profile):
                profile = None
        if profile is None:
            profile = build(sample)
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".tmp")
                    tmp.write_bytes(profile.to_bytes())
                    tmp.replace(path)
                except OSError:
                    pass  # a read-only home: the profile still works, it just isn't kept
        with self._lock:
            self._memory[sha] = profile
            while len(self._memory) > 32:  # a bounded memo: profiles are a few kB, samples unbounded
                self._memory.pop(next(iter(self._memory)))
        return profile
