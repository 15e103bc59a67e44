"""Audio -> expression diffusion model: ARKit-52 + head pose from the sound of speech alone.

features (log-mel at the frame rate) -> model (conditional denoiser) + scheduler (DDPM/DDIM)
-> sampler (window by window, previous-window conditioning, classifier-free guidance).
Trained on synthetic voices against the procedural teacher (data, train); served by tensor_model.
"""
