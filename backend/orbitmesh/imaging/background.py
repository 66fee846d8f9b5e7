"""Background removal: an existing alpha, rembg (isnet-general-use) when present locally, or a
built-in fallback that models the background from the image border.

Every remover returns a soft alpha ``(H, W) float32`` in [0, 1] at the source resolution.
Nothing here downloads: rembg is used only when it is installed AND its model file exists: the
model folder's copy (``<model_dir>/isnet-general-use/isnet-general-use.onnx``, what
``orbitmesh models download isnet-general-use`` writes; :func:`rembg_model_in`), else rembg's own folder.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from orbitmesh.errors import InputError, ModelError

REMOVERS = ("auto", "alpha", "rembg", "border", "none")
REMBG_MODEL_NAME = "isnet-general-use"
REMBG_FIX = (f"pip install 'rembg[cpu]' and run `orbitmesh models download {REMBG_MODEL_NAME}` (or put "
             f"{REMBG_MODEL_NAME}.onnx in ~/.u2net or $U2NET_HOME), or set rembg_model_path; or use remover='border'")


@dataclass
class Cutout:
    """Result of background removal. ``alpha``: (H, W) float32 in [0, 1], source resolution."""

    alpha: np.ndarray
    method: str
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- selection

def alpha_is_meaningful(rgba: Image.Image) -> bool:
    """True when the alpha channel separates an object: some pixels clearly see-through, some opaque.

    A fully opaque alpha (a photo saved as RGBA) is not meaningful; neither is a near-empty one.
    """
    if rgba.mode != "RGBA":
        return False
    a = np.asarray(rgba.getchannel("A"))
    transparent = float(np.mean(a < 128))
    return 0.005 <= transparent <= 0.999


def rembg_model_in(model_dir: str | os.PathLike | None) -> str | None:
    """The isnet-general-use file in the model folder, in the catalogue's layout (what the model manager
    writes), or None: what a job passes as ``rembg_model_path`` so preprocessing finds it there."""
    if model_dir is None:
        return None
    from orbitmesh.models.catalogue import get

    entry = get(REMBG_MODEL_NAME, "background_removal")
    folder = entry.source.local_path(model_dir)
    return str(folder / entry.files[0]) if folder is not None else None


def rembg_model_file(model_path: str | os.PathLike | None = None,
                     model_dir: str | os.PathLike | None = None) -> Path:
    """Where rembg's isnet-general-use model is (or would be): ``model_path``, else the model folder's copy
    (:func:`rembg_model_in`), else rembg's own location ``$U2NET_HOME`` (default ``$XDG_DATA_HOME/.u2net``,
    then ``~/.u2net``)."""
    from orbitmesh.models.catalogue import rembg_home

    if model_path:
        return Path(model_path).expanduser()
    in_model_dir = rembg_model_in(model_dir)
    if in_model_dir is not None:
        return Path(in_model_dir)
    return rembg_home() / f"{REMBG_MODEL_NAME}.onnx"


def rembg_installed() -> bool:
    return importlib.util.find_spec("rembg") is not None


def rembg_available(model_path: str | os.PathLike | None = None) -> bool:
    """rembg can run without touching the network: the package is importable and the model file exists."""
    return rembg_installed() and rembg_model_file(model_path).is_file()


def select_remover(rgba: Image.Image, remover: str = "auto", rembg_model_path: str | None = None) -> str:
    """Resolve ``remover`` to the method that will run: 'alpha', 'rembg', 'border' or 'none'.

    'auto': a meaningful existing alpha, else rembg if available locally, else 'border'.
    An explicit choice that cannot run raises (InputError / ModelError with a fix).
    """
    if remover not in REMOVERS:
        raise InputError(f"unknown background remover {remover!r}", fix=f"use one of {', '.join(REMOVERS)}")
    if remover == "auto":
        if alpha_is_meaningful(rgba):
            return "alpha"
        return "rembg" if rembg_available(rembg_model_path) else "border"
    if remover == "alpha" and not alpha_is_meaningful(rgba):
        raise InputError("remover 'alpha' needs an image with transparency, but this image is opaque",
                         fix="save the image with an alpha channel around the object, or use remover 'auto'")
    if remover == "rembg":
        if not rembg_installed():
            raise ModelError("remover 'rembg' was asked for but the rembg package is not installed", fix=REMBG_FIX)
        if not rembg_model_file(rembg_model_path).is_file():
            raise ModelError(f"rembg model not found at {rembg_model_file(rembg_model_path)} "
                             "(OrbitMesh never downloads it implicitly)", fix=REMBG_FIX)
    return remover


def remove_background(rgba: Image.Image, remover: str = "auto", rembg_model_path: str | None = None) -> Cutout:
    """Soft object alpha for an RGBA image using the selected remover (see :func:`select_remover`)."""
    method = select_remover(rgba, remover, rembg_model_path)
    if method in ("alpha", "none"):
        # 'none' keeps the image as given: its alpha if it has one, else fully opaque.
        return Cutout(np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0, method)
    rgb = np.asarray(rgba.convert("RGB"))
    if method == "rembg":
        try:
            return Cutout(rembg_alpha(rgba.convert("RGB"), rembg_model_file(rembg_model_path)), "rembg")
        except Exception as exc:  # a broken onnxruntime/model must not cost the job in auto mode
            if remover == "rembg":
                raise ModelError(f"rembg failed: {exc}", fix=REMBG_FIX) from exc
            cut = border_alpha(rgb)
            cut.warnings.insert(0, f"rembg failed ({type(exc).__name__}: {exc}); used the border-colour fallback")
            return cut
    return border_alpha(rgb)


# ----------------------------------------------------------------------------- rembg

_REMBG_SESSIONS: dict[str, object] = {}


def rembg_alpha(rgb: Image.Image, model_file: Path) -> np.ndarray:
    """(H, W) float32 alpha from rembg's isnet-general-use session loaded from ``model_file``.

    rembg's own ``new_session`` downloads a missing (or differently hashed) model, so the session
    class is subclassed to load exactly our local file; its preprocessing is unchanged.
    """
    key = str(model_file.resolve())
    session = _REMBG_SESSIONS.get(key)
    if session is None:
        import onnxruntime as ort
        from rembg.sessions.dis_general_use import DisSession

        class LocalIsnetSession(DisSession):
            @classmethod
            def download_models(cls, *args, **kwargs):
                return key

        session = LocalIsnetSession(REMBG_MODEL_NAME, ort.SessionOptions())
        _REMBG_SESSIONS[key] = session
    mask = session.predict(rgb)[0]
    if mask.size != rgb.size:
        mask = mask.resize(rgb.size, Image.Resampling.BILINEAR)
    return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0


# ----------------------------------------------------------------------------- border statistics

WORK_SIDE = 640  # the fallback runs at this longer side; the alpha is upsampled afterwards


def border_alpha(rgb: np.ndarray) -> Cutout:
    """Object alpha for a (H, W, 3) uint8 photo on a plain or smoothly varying studio background.

    The background colour is a quadratic polynomial of (x, y) fitted robustly to the border strip
    (covers plain, linear and radial gradients and vignetting); pixels whose colour residual is
    large relative to the border's robust noise level (MAD) are object. Hysteresis thresholding,
    closing, hole filling and component filtering then clean the mask.
    """
    from orbitmesh.imaging import morphology

    h, w = rgb.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    small = rgb
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
    fit = fit_border_background(small)
    mask = morphology.clean_mask(fit.strong & ~fit.shadow, fit.weak & ~fit.shadow, fillable=fit.shadow)
    warnings = list(fit.warnings)
    coverage = float(mask.mean())
    if coverage > 0.9:
        warnings.append(f"background removal kept {coverage:.0%} of the image: the background may not be plain; "
                        "check preprocessed.png (an image with transparency or rembg gives better cut-outs)")
    alpha = morphology.soften(mask)
    if scale < 1.0:
        alpha = np.asarray(Image.fromarray(alpha, "F").resize((w, h), Image.Resampling.BILINEAR))
    return Cutout(np.clip(alpha, 0.0, 1.0).astype(np.float32), "border", warnings)


@dataclass
class BorderFit:
    background: np.ndarray  # (H, W, 3) float32 fitted background colour
    distance: np.ndarray  # (H, W) float32 colour residual in robust noise units
    sigma: np.ndarray  # (3,) robust per-channel noise of the border residual (0..255 units)
    inlier_fraction: float  # border pixels the background model explains
    strong: np.ndarray  # (H, W) bool: certainly object
    weak: np.ndarray  # (H, W) bool: possibly object (kept when connected to strong)
    shadow: np.ndarray  # (H, W) bool: looks like a soft shadow cast on the background
    warnings: list[str]


LOW_K, HIGH_K = 4.0, 8.0  # hysteresis thresholds in robust sigmas
SIGMA_FLOOR = 2.0  # 0..255 units: JPEG/quantisation noise even on a flat synthetic background
BUSY_SIGMA = 12.0  # background noise (grey levels) above which the scene is not a studio backdrop
LIGHT_MAX = 1.6  # brightness ratio up to which a smooth same-hue region counts as lit background


def _design(xs: np.ndarray, ys: np.ndarray, w: int, h: int) -> np.ndarray:
    u = xs / max(w - 1, 1) * 2.0 - 1.0
    v = ys / max(h - 1, 1) * 2.0 - 1.0
    return np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1)


def fit_border_background(rgb: np.ndarray, border_frac: float = 0.03) -> BorderFit:
    """Fit the background colour model to the border strip of a (H, W, 3) image and score every pixel.

    Model = robust quadratic polynomial of (x, y) (plain, linear, radial gradients) + a Coons patch
    that carries what the polynomial misses along the four sides (a floor/wall horizon, uneven
    light) smoothly into the interior.
    """
    from scipy import ndimage

    h, w = rgb.shape[:2]
    img = rgb.astype(np.float32)
    # A light blur averages sensor/JPEG noise so a smaller threshold separates low-contrast objects.
    img = ndimage.gaussian_filter(img, sigma=(1.0, 1.0, 0))
    b = max(2, round(border_frac * min(h, w)))
    strip = np.zeros((h, w), bool)
    strip[:b], strip[-b:], strip[:, :b], strip[:, -b:] = True, True, True, True
    ys, xs = np.nonzero(strip)
    A = _design(xs.astype(np.float32), ys.astype(np.float32), w, h)
    y = img[ys, xs]  # (N, 3)
    inl = np.ones(len(y), bool)
    for _ in range(5):  # iteratively trimmed least squares: objects touching the border are outliers
        coef, *_ = np.linalg.lstsq(A[inl], y[inl], rcond=None)
        res = y - A @ coef
        med = np.median(res[inl], axis=0)
        sigma = np.maximum(1.4826 * np.median(np.abs(res[inl] - med), axis=0), SIGMA_FLOOR)
        d = np.sqrt(np.mean((res / sigma) ** 2, axis=1))
        new = d < 3.0
        if new.sum() < max(16, 0.2 * len(y)) or np.array_equal(new, inl):
            break
        inl = new
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    background = (_design(gx, gy, w, h) @ coef).astype(np.float32)
    outlier = np.zeros((h, w), bool)
    outlier[ys[~inl], xs[~inl]] = True
    background += _coons_residual(img - background, outlier, b)
    # Noise, held out: what the model leaves on the ring just inside the strip it was built from
    # (the strip itself is reproduced by construction). MAD ignores object pixels in the ring.
    ring = np.zeros((h, w), bool)
    ring[b:3 * b, b:w - b], ring[h - 3 * b:h - b, b:w - b] = True, True
    ring[b:h - b, b:3 * b], ring[b:h - b, w - 3 * b:w - b] = True, True
    sigma = _mad_sigma((img - background)[ring])
    # Refine once: re-estimate the background from every pixel that is clearly background (not
    # just the border), so interior light falloff and the floor around the object are modelled.
    dist = np.sqrt(np.mean(((img - background) / sigma) ** 2, axis=-1))
    first = dist <= LOW_K
    background = _normalized_blur(img, first, background, radius=0.06 * min(h, w))
    sigma = _mad_sigma((img - background)[first])
    dist = np.sqrt(np.mean(((img - background) / sigma) ** 2, axis=-1)).astype(np.float32)
    # Seeds come from the blurred residual (noise-robust); the object's extent from the raw one,
    # so the blur does not grow the edges. Raw noise is measured separately.
    raw = rgb.astype(np.float32)
    raw_sigma = _mad_sigma((raw - background)[first])
    raw_dist = np.sqrt(np.mean(((raw - background) / raw_sigma) ** 2, axis=-1)).astype(np.float32)
    inlier_fraction = float(np.mean(inl))
    warnings = []
    if inlier_fraction < 0.6:
        warnings.append(f"the image border is not a plain background (only {inlier_fraction:.0%} of it fits a "
                        "smooth colour): the object may touch the border or the scene is busy; background "
                        "removal may be poor")
    if float(sigma.max()) > BUSY_SIGMA:
        warnings.append(f"the background is busy or textured (noise about {float(sigma.max()):.0f} grey levels): "
                        "the built-in remover needs a plain or smoothly lit background")
    # Without colour a grey object and a shadow look alike: only colour images get shadow removal.
    colourful = float(np.abs(img - img.mean(axis=-1, keepdims=True)).max()) > 6.0
    shadow = _shadow_like(img, background) if colourful else np.zeros((h, w), bool)
    return BorderFit(background, dist, sigma.astype(np.float32), inlier_fraction, dist > HIGH_K,
                     (raw_dist > LOW_K) & (dist > LOW_K / 2), shadow, warnings)


def _mad_sigma(res: np.ndarray) -> np.ndarray:
    """(3,) robust per-channel noise of (N, 3) residuals, floored at SIGMA_FLOOR."""
    if len(res) < 8:
        return np.full(3, SIGMA_FLOOR, np.float32)
    mad = np.median(np.abs(res - np.median(res, axis=0)), axis=0)
    return np.maximum(1.4826 * mad, SIGMA_FLOOR).astype(np.float32)


def _normalized_blur(img: np.ndarray, known: np.ndarray, prior: np.ndarray, radius: float) -> np.ndarray:
    """(H, W, 3) smooth background through the ``known`` pixels (normalised convolution); far
    from any known pixel (under a large object) it falls back to ``prior``."""
    from scipy import ndimage

    wgt = ndimage.gaussian_filter(known.astype(np.float32), radius, mode="nearest")
    num = ndimage.gaussian_filter(img * known[..., None], (radius, radius, 0), mode="nearest")
    eps = 0.02
    return ((num + eps * prior) / (wgt[..., None] + eps)).astype(np.float32)


def _side_profile(values: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """(L, 3) smooth profile along one side from its strip ``values`` (L, B, 3); ``bad`` (L, B)
    marks object pixels, whose samples are bridged by interpolation from the good ones."""
    from scipy import ndimage

    n = values.shape[0]
    good = bad.mean(axis=1) < 0.5
    prof = np.median(values, axis=1)
    if good.sum() < 2:
        return np.zeros_like(prof)
    idx = np.arange(n)
    prof = np.stack([np.interp(idx, idx[good], prof[good, c]) for c in range(3)], axis=-1)
    k = max(3, n // 20) | 1
    prof = ndimage.median_filter(prof, size=(k, 1), mode="nearest")
    return ndimage.gaussian_filter1d(prof, sigma=k / 4, axis=0, mode="nearest")


def _coons_residual(res: np.ndarray, bad: np.ndarray, b: int) -> np.ndarray:
    """(H, W, 3) transfinite (Coons) interpolation of the residual's four side profiles."""
    h, w = res.shape[:2]
    top = _side_profile(res[:b].transpose(1, 0, 2), bad[:b].T)
    bottom = _side_profile(res[-b:].transpose(1, 0, 2), bad[-b:].T)
    left = _side_profile(res[:, :b], bad[:, :b])
    right = _side_profile(res[:, -b:], bad[:, -b:])
    u = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    v = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    p00, p10 = (top[0] + left[0]) / 2, (top[-1] + right[0]) / 2
    p01, p11 = (bottom[0] + left[-1]) / 2, (bottom[-1] + right[-1]) / 2
    coons = ((1 - v) * top[None] + v * bottom[None] + (1 - u) * left[:, None] + u * right[:, None]
             - ((1 - u) * (1 - v) * p00 + u * (1 - v) * p10 + (1 - u) * v * p01 + u * v * p11))
    return coons.astype(np.float32)


def _shadow_like(img: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(H, W) bool: a smooth, darker copy of the background colour (a soft cast shadow).

    Shadows keep the background's chromaticity and have no texture; object pixels that happen to
    qualify inside the object are restored by hole filling (see morphology.clean_mask).
    """
    from scipy import ndimage

    ratio = (img + 4.0) / (np.maximum(background, 0.0) + 4.0)
    lum = ratio.mean(axis=-1)
    chroma = np.abs(ratio - lum[..., None]).max(axis=-1) / np.maximum(lum, 1e-3)
    grey = img.mean(axis=-1)
    texture = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1)) / 8.0  # grey levels per pixel
    smooth = ndimage.uniform_filter(texture, 5) < 0.02 * np.maximum(background.mean(axis=-1), 16.0) + 1.0
    return (lum > 0.25) & (lum < LIGHT_MAX) & (chroma < 0.06) & smooth
