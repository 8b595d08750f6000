"""The upscalers this server has: the ones that need no model file, and A1111's latent upscale modes (the
hires fix runs those in pixel space; see passes.py)."""

UPSCALERS = ("None", "Lanczos", "Nearest")
LATENT_UPSCALE_MODES = ("Latent", "Latent (antialiased)", "Latent (bicubic)", "Latent (bicubic antialiased)",
                        "Latent (nearest)", "Latent (nearest-exact)")
