"""Audio -> expression diffusion model: ARKit-52 + head pose from the sound of speech alone.

features (log-mel at the frame rate) -> model (conditional denoiser) + scheduler (DDPM/DDIM)
-> sampler (window by window, previous-window conditioning, classifier-free guidance).
Trained on synthetic voices (spoken, and sung through singing.py) against the procedural teacher
(data, train); served by tensor_model, with style (incl. time-coded emotions) per frame and the
optional blink top-up (blinks).
"""
