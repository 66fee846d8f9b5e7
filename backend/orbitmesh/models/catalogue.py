"""Every model OrbitMesh knows, of every kind, and whether it is on this machine.

One entry per model: what it is, where it comes from (hub id, files, where a local copy may
live under the model folder), its licence and whether that allows commercial use (``yes``,
``conditional`` with the condition, ``no``: see :data:`COMMERCIAL`), its size, and the data its
loader needs (the LRM architecture and config preset, a text-to-image model's sampling
defaults). ``is_available(model_dir)`` looks at the disk only (the model folder, the hub cache
under ``<model_dir>/hub``, the package itself) and never touches the network;
``how_to_get(model_dir)`` is the one-line fix shown when it is missing.

Kinds: ``lrm`` (image -> triplane reconstruction), ``video`` (SV3D orbit views for quality
mode), ``text_to_image`` (prompt -> image, diffusers pipelines) and ``background_removal`` (rembg's
IS-Net, cutting the object out before reconstruction; a plain URL download, not a hub repo). doctor,
the server's ``/health``, the model manager (:mod:`orbitmesh.models.manager`) and the loaders
(:mod:`orbitmesh.models.registry`, :mod:`orbitmesh.models.text_to_image`,
:mod:`orbitmesh.models.video.pipeline`, :mod:`orbitmesh.imaging.background`) read this module.
Importing it is cheap: no torch, no hub library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from orbitmesh.errors import LicenceError, ModelError

KINDS: dict[str, str] = {"lrm": "reconstruction", "video": "SV3D orbit-view", "text_to_image": "text-to-image",
                         "background_removal": "background removal"}
# The model each kind uses when none is named: the real LRM preferred over the bundled preview,
# the SV3D variant quality mode runs, the text-to-image model behind --prompt.
DEFAULTS: dict[str, str] = {"lrm": "vfusion3d", "video": "sv3d_p", "text_to_image": "stabilityai/sdxl-turbo"}
# The real reconstruction models a job without --model looks for, in this order (the first one on this
# machine wins; ``commercial_only`` skips those whose licence says "no"); with none, the bundled preview.
# ``Settings.default_model`` overrides the order with one model.
LRM_PREFERENCE: tuple[str, ...] = ("vfusion3d", "triposr")
# Whether a licence allows commercial use: "yes" (MIT, Apache-2.0, OpenRAIL with its use restrictions),
# "conditional" (allowed only for some users, e.g. under a revenue cap: ModelEntry.condition says which),
# "no" (non-commercial licences). A model outside the catalogue is "unknown".
COMMERCIAL: dict[str, str] = {"yes": "commercial use allowed", "conditional": "commercial use allowed on a condition",
                              "no": "non-commercial only"}
UNKNOWN = "unknown"
# The generate option that picks a kind's model (named in the fix of a refused model).
MODEL_OPTION: dict[str, str] = {"lrm": "--model", "text_to_image": "--text-to-image-model"}

# LRM checkpoint file names a model folder may hold (first match wins when loading).
LRM_WEIGHT_NAMES = ("model.safetensors", "model.pth", "model.pt", "model.ckpt", "pytorch_model.bin")
DIFFUSERS_INDEX = "model_index.json"  # marks a diffusers pipeline folder
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # backend/orbitmesh


def hub_cache_dir(model_dir: str | os.PathLike) -> Path:
    """The hub cache the loaders download into: ``<model_dir>/hub`` (huggingface_hub layout)."""
    return Path(model_dir) / "hub"


def default_hub_cache() -> Path:
    """The user's own hub cache (``HF_HUB_CACHE`` / ``HF_HOME``), where diffusers downloads by default."""
    try:
        from huggingface_hub import constants  # small, no torch; its value honours every env variable

        return Path(constants.HF_HUB_CACHE)
    except ImportError:
        pass
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(home) / "hub"


def rembg_home() -> Path:
    """rembg's own model folder, where ``rembg`` itself downloads: ``$U2NET_HOME``, else
    ``$XDG_DATA_HOME/.u2net``, else ``~/.u2net`` (as rembg's ``BaseSession.u2net_home``)."""
    home = os.environ.get("U2NET_HOME") or os.path.join(os.environ.get("XDG_DATA_HOME", "~"), ".u2net")
    return Path(home).expanduser()


def hub_caches(kind: str, model_dir: str | os.PathLike | None) -> list[Path]:
    """The hub caches a kind's loader reads, in order: ``<model_dir>/hub`` (where the LRM and SV3D
    loaders download); for text-to-image also the user's own, where diffusers downloads."""
    caches = [hub_cache_dir(Path(model_dir).expanduser())] if model_dir is not None else []
    return caches + [default_hub_cache()] if kind == "text_to_image" else caches


def hub_cached_file(hub_id: str, filename: str, cache_dir: str | os.PathLike) -> Path | None:
    """``filename`` of the ``main`` revision of ``hub_id`` in a hub cache, or None (disk only).

    Layout: ``<cache>/models--<org>--<name>/refs/main`` holds a revision whose files are in
    ``snapshots/<revision>/`` (what ``huggingface_hub.try_to_load_from_cache`` reads).
    """
    repo = Path(cache_dir) / ("models--" + hub_id.replace("/", "--"))
    try:
        revision = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    path = repo / "snapshots" / revision / filename
    return path if revision and path.is_file() else None


@dataclass(frozen=True)
class Source:
    """Where a model comes from and where a copy of it may already be.

    ``local``: paths under the model folder where a copy may be (folder or file); one counts when
    it holds one of ``local_marker`` (or, with no marker, when it exists). ``cache_marker``: the
    file whose presence in a hub cache means the model was downloaded. ``install``: the path of
    ``local`` the model manager writes (default the first); a folder when there is a marker, else
    the one file of ``files``. ``url``/``md5``: a model that is one file at a plain URL (not a hub
    repo), with its published checksum.
    """

    hub_id: str | None = None
    files: tuple[str, ...] = ()  # fetched from the hub repo: file names, or patterns for a diffusers repo
    cache_marker: str | None = None
    local: tuple[str, ...] = ()
    local_marker: tuple[str, ...] = ()
    bundled: str | None = None  # a folder inside the orbitmesh package
    builtin: bool = False  # made from code: nothing to download
    install: str | None = None  # where `orbitmesh models download/install` puts it (one of local)
    url: str | None = None  # a one-file model downloaded from this URL (files[0] is its name)
    md5: str | None = None  # the published md5 of that file

    @property
    def install_path(self) -> str | None:
        """The path under the model folder that the model manager writes, or None (nothing to download)."""
        return self.install or (self.local[0] if self.local else None)

    @property
    def downloadable(self) -> bool:
        return bool((self.hub_id or self.url) and self.install_path)

    def local_path(self, model_dir: str | os.PathLike | None) -> Path | None:
        """The first copy under the model folder (see ``local``), or None."""
        if model_dir is None:
            return None
        root = Path(model_dir).expanduser()
        for rel in self.local:
            if _holds(root / rel, self.local_marker):
                return root / rel
        return None

    def bundled_path(self) -> Path | None:
        return PACKAGE_ROOT / self.bundled if self.bundled else None

    def cached_file(self, cache_dir: str | os.PathLike) -> Path | None:
        """The marker file in a hub cache, or None."""
        if not (self.hub_id and self.cache_marker):
            return None
        return hub_cached_file(self.hub_id, self.cache_marker, cache_dir)


def _holds(path: Path, marker: tuple[str, ...]) -> bool:
    if not marker:
        return path.exists()
    return path.is_dir() and any((path / name).is_file() for name in marker)


def diffusers_source(hub_id: str, fp16_variant: bool = True) -> Source:
    """The layout of a diffusers pipeline repo: a folder ``<org>/<name>``, ``<org>--<name>`` or
    ``<name>`` under the model folder (``hf download --local-dir``), or the hub cache."""
    owner, _, name = hub_id.rpartition("/")
    local = (f"{owner}/{name}", f"{owner}--{name}", name) if owner else (name,)
    files = ("*.json", "*.txt", "*.fp16.safetensors") if fp16_variant else ()
    return Source(hub_id=hub_id, files=files, cache_marker=DIFFUSERS_INDEX, local=local,
                  local_marker=(DIFFUSERS_INDEX,))


# The reconstruction model classes (ModelEntry.architecture of the lrm kind).
ARCHITECTURES: dict[str, str] = {"vfusion3d": "orbitmesh.models.lrm.LRM (VFusion3D family)",
                                 "triposr": "orbitmesh.models.triposr (TripoSR)"}


@dataclass(frozen=True)
class TextToImageDefaults:
    """How a text-to-image model samples by default and what it needs."""

    family: str  # "turbo" (distilled, few steps, no guidance), "sd", "sdxl"
    steps: int
    guidance_scale: float
    size: int  # native width = height
    vram_gb: float  # fp16 weights, roughly: what must fit on the GPU without offloading
    fp16_variant: bool = True  # the repo has *.fp16.safetensors files


@dataclass(frozen=True)
class ModelEntry:
    """One known model. ``commercial`` (a key of :data:`COMMERCIAL`): whether its licence allows
    commercial use: "yes" (use restrictions like OpenRAIL's are allowed), "conditional" (only for some
    users; ``condition`` says who, e.g. a revenue cap) or "no". ``architecture`` (lrm kind): the model
    class that loads it, "vfusion3d" (:class:`orbitmesh.models.lrm.LRM`: VFusion3D, the preview model,
    tiny-random) or "triposr"."""

    name: str
    kind: str  # a key of KINDS
    description: str
    source: Source
    licence: str
    licence_url: str
    commercial: str  # a key of COMMERCIAL
    size_gb: float  # approximate download
    gated: bool = False  # the hub asks for a licence click-through and a token
    preset: str | None = None  # LRM config preset (lrm kind)
    text_to_image: TextToImageDefaults | None = None  # sampling defaults (text_to_image kind)
    condition: str | None = None  # who may use it commercially ("conditional" only)
    architecture: str | None = None  # lrm kind: "vfusion3d" or "triposr"

    def __post_init__(self) -> None:
        # A wrong value here would silently let a non-commercial model through --commercial-only.
        if self.commercial not in COMMERCIAL:
            raise ValueError(f"{self.name}: commercial must be one of {list(COMMERCIAL)}, got {self.commercial!r}")
        if (self.commercial == "conditional") != bool(self.condition):
            raise ValueError(f"{self.name}: a condition is given exactly when commercial is 'conditional'")
        if (self.kind == "lrm") != (self.architecture in ARCHITECTURES):
            raise ValueError(f"{self.name}: an lrm entry names its architecture ({list(ARCHITECTURES)}), others none")

    @property
    def hub_id(self) -> str | None:
        return self.source.hub_id

    @property
    def files(self) -> tuple[str, ...]:
        return self.source.files

    @property
    def default(self) -> bool:
        return DEFAULTS.get(self.kind) == self.name

    def cached_file(self, model_dir: str | os.PathLike | None) -> Path | None:
        """The download marker in a hub cache this kind's loader reads (see :func:`hub_caches`), or None;
        for background removal the model file in rembg's own folder (:func:`rembg_home`)."""
        if self.kind == "background_removal":
            path = rembg_home() / self.files[0] if self.files else None
            return path if path is not None and path.is_file() else None
        for cache in hub_caches(self.kind, model_dir):
            hit = self.source.cached_file(cache)
            if hit is not None:
                return hit
        return None

    def is_available(self, model_dir: str | os.PathLike | None) -> bool:
        """Loadable without a download: built in, bundled, in the model folder or in a hub cache."""
        if self.source.builtin:
            return True
        bundled = self.source.bundled_path()
        if bundled is not None:
            return _holds(bundled, self.source.local_marker)
        return self.source.local_path(model_dir) is not None or self.cached_file(model_dir) is not None

    def how_to_get(self, model_dir: str | os.PathLike | None) -> str:
        """One line: how to put this model on this machine."""
        folder = Path(model_dir).expanduser() if model_dir is not None else Path("<model folder>")
        if self.source.builtin:
            return f"{self.name} is built in: pass --model {self.name}"
        if self.source.bundled:
            return "reinstall orbitmesh, or train it: `orbitmesh train configs/preview.toml`"
        manager = f"`orbitmesh models download {self.name}`"
        if self.kind == "text_to_image":
            return f"run {manager}, or " + diffusers_how_to_get(self.name, model_dir, self)
        weights = self.files[0]
        if self.kind == "background_removal":
            return (f"licence {self.licence}: run {manager} (fetches {self.source.url}), or put {weights} in "
                    f"{folder / str(self.source.install_path)} (or in rembg's folder $U2NET_HOME, default ~/.u2net)")
        if self.kind == "lrm":
            return (f"download {self.name} with {manager} or `orbitmesh generate IMAGE --model {self.name}` "
                    f"(fetches {self.hub_id}; licence {self.licence}), or put its {' and '.join(self.files)} in "
                    f"{folder / self.name}, or pass --model PATH; `--model tiny-random` checks the pipeline without "
                    "a real model")
        gated = (" (gated: accept the licence on that page and log in with `hf auth login` or set HF_TOKEN)"
                 if self.gated else "")
        return (f"licence {self.licence}: https://huggingface.co/{self.hub_id}{gated}; then run {manager}, or "
                f"`hf download {self.hub_id} {weights} --cache-dir {hub_cache_dir(folder)}` "
                f"or put {weights} in {folder}")

    def licence_notice(self) -> str:
        url = f" ({self.licence_url})" if self.licence_url else ""
        if self.source.url:  # not a hub repo
            return f"{self.name} ({self.source.url}) is licensed {self.licence}{url}."
        gated = (" Gated on the hub: accept the licence on its page and log in (hf auth login)."
                 if self.gated else "")
        return f"{self.name} ({self.hub_id or 'built in'}) is licensed {self.licence}{url}.{gated}"

    def licence_record(self) -> dict[str, str | None]:
        """What job.json and a job's result record of a model used: {name, licence, commercial, condition}."""
        return {"name": self.name, "licence": self.licence, "commercial": self.commercial, "condition": self.condition}


def diffusers_how_to_get(model: str, model_dir: str | os.PathLike | None, entry: ModelEntry | None = None) -> str:
    """The fix for a missing text-to-image model (known or any hub id): its licence, then ``hf download``."""
    licence = f"licence: {entry.licence}, {entry.licence_url}; " if entry else ""
    target = Path(model_dir) / model if model_dir else Path("<model folder>") / model
    include = "".join(f' "{pattern}"' for pattern in entry.files) if entry else ""
    include = f" --include{include}" if include else ""
    return (f"{licence}accept the licence, then on a machine with internet run "
            f"`hf download {model}{include} --local-dir {target}` (or copy a diffusers folder there), "
            f"or pass a local folder with --text-to-image-model")


_NC = "https://creativecommons.org/licenses/by-nc/4.0/"
_APACHE = "https://www.apache.org/licenses/LICENSE-2.0"
_SAI = "Stability AI Community License"
# The Stability AI Community License's condition on commercial use (https://stability.ai/license).
SAI_CONDITION = ("free for commercial use by individuals and organisations with under USD 1M in annual revenue; "
                 "above that an enterprise licence from Stability AI is required (https://stability.ai/license)")


def _lrm(name: str, description: str, source: Source, **kw) -> ModelEntry:
    return ModelEntry(name, "lrm", description, source, **kw)


def _sv3d(name: str, description: str) -> ModelEntry:
    weights = f"{name}.safetensors"
    # A converted folder (orbitmesh convert-sv3d), the SGM checkpoint file, or that file under sv3d/
    # (where the model manager puts it).
    source = Source(hub_id="stabilityai/sv3d", files=(weights,), cache_marker=weights,
                    local=(name, weights, f"sv3d/{weights}"), install=f"sv3d/{weights}")
    return ModelEntry(name, "video", description, source, licence=_SAI,
                      licence_url="https://huggingface.co/stabilityai/sv3d",
                      commercial="conditional", condition=SAI_CONDITION, size_gb=9.4, gated=True)


def _t2i(hub_id: str, description: str, licence: str, commercial: str, size_gb: float,
         defaults: TextToImageDefaults) -> ModelEntry:
    sai = licence.startswith(_SAI)
    licence_url = f"https://huggingface.co/{hub_id}/blob/main/LICENSE.md" if sai else f"https://huggingface.co/{hub_id}"
    return ModelEntry(hub_id, "text_to_image", description, diffusers_source(hub_id, defaults.fp16_variant),
                      licence=licence, licence_url=licence_url, commercial=commercial, size_gb=size_gb,
                      text_to_image=defaults, condition=SAI_CONDITION if sai else None)


_OURS = "Apache-2.0 (part of OrbitMesh)"
# rembg's IS-Net download (rembg/sessions/dis_general_use.py: the URL and md5 rembg itself checks).
REMBG_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/isnet-general-use.onnx"
REMBG_MD5 = "fc16ebd8b0c10d971d3513d564d01e29"
_ENTRIES = (
    _lrm("vfusion3d", "VFusion3D (Meta): the released image-to-3D LRM, DINOv2-base + 16x1024 transformer",
         Source(hub_id="facebook/vfusion3d", files=("model.safetensors", "config.json"),
                cache_marker="model.safetensors", local=("vfusion3d",), local_marker=LRM_WEIGHT_NAMES),
         licence="CC-BY-NC 4.0 (non-commercial use only)", licence_url=_NC, commercial="no", size_gb=1.8,
         preset="vfusion3d", architecture="vfusion3d"),
    # Released layout: config.yaml (OmegaConf) + model.ckpt; our save_pretrained folder has config.json +
    # model.safetensors instead. Either counts in <model_dir>/triposr/.
    _lrm("triposr", "TripoSR (Tripo AI, Stability AI): image-to-3D LRM, DINO ViT-B/16 + 16x1024 triplane "
         "transformer; MIT, so meshes may be sold", Source(
             hub_id="stabilityai/TripoSR", files=("model.ckpt", "config.yaml"), cache_marker="model.ckpt",
             local=("triposr",), local_marker=("model.ckpt", "model.safetensors")),
         licence="MIT", licence_url="https://huggingface.co/stabilityai/TripoSR", commercial="yes", size_gb=1.68,
         architecture="triposr"),
    _lrm("tiny-random", "plumbing check, not a model: a tiny LRM with fixed random weights (blobby shapes), "
         "runs end to end on a CPU in seconds", Source(builtin=True),
         licence=_OURS, licence_url=_APACHE, commercial="yes", size_gb=0.0, preset="tiny", architecture="vfusion3d"),
    _lrm("orbitmesh-preview", "bundled preview model: a small LRM trained on procedural shapes (simple, "
         "low fidelity; ships inside the package, used when no real model is installed)",
         Source(bundled="weights/orbitmesh-preview", local_marker=LRM_WEIGHT_NAMES),
         licence=_OURS, licence_url=_APACHE, commercial="yes", size_gb=0.01, architecture="vfusion3d"),
    _sv3d("sv3d_u", "SV3D_u (Stability AI): 21 orbit views at a fixed elevation"),
    _sv3d("sv3d_p", "SV3D_p (Stability AI): 21 orbit views along a given camera path"),
    _t2i("stabilityai/sdxl-turbo", "default: good objects in 4 steps; 8 GB GPUs need offload", _SAI, "conditional",
         7.0, TextToImageDefaults("turbo", 4, 0.0, 512, 7.0)),
    _t2i("stabilityai/sd-turbo", "smallest/fastest; weaker shapes", _SAI, "conditional", 2.6,
         TextToImageDefaults("turbo", 4, 0.0, 512, 2.6)),
    _t2i("stable-diffusion-v1-5/stable-diffusion-v1-5", "permissive licence; 30 steps with guidance",
         "CreativeML OpenRAIL-M (commercial use allowed under its use restrictions)", "yes", 2.7,
         TextToImageDefaults("sd", 30, 7.5, 512, 2.6)),
    _t2i("stabilityai/stable-diffusion-xl-base-1.0", "permissive licence, best quality, slow (30 steps at 1024)",
         "CreativeML OpenRAIL++-M (commercial use allowed under its use restrictions)", "yes", 7.0,
         TextToImageDefaults("sdxl", 30, 6.0, 1024, 7.0)),
    _t2i("black-forest-labs/FLUX.1-schnell", "12B parameters: needs offload below 24 GB", "Apache-2.0", "yes", 34.0,
         TextToImageDefaults("turbo", 4, 0.0, 1024, 24.0, fp16_variant=False)),
    # IS-Net (DIS, Qin et al.): the DIS repository, which released these weights, is Apache-2.0 (its DIS5K
    # training data has separate terms of use); rembg (MIT) redistributes the ONNX export.
    ModelEntry("isnet-general-use", "background_removal",
               "IS-Net general use (via rembg): cuts the object out of a photo before reconstruction; optional, "
               "a built-in border-colour fallback runs without it (needs `pip install rembg`)",
               Source(files=("isnet-general-use.onnx",), local=("isnet-general-use",),
                      local_marker=("isnet-general-use.onnx",), url=REMBG_URL, md5=REMBG_MD5),
               licence="Apache-2.0", licence_url="https://github.com/xuebinqin/DIS", commercial="yes", size_gb=0.18),
)
CATALOGUE: dict[str, ModelEntry] = {e.name: e for e in _ENTRIES}


def models(kind: str | None = None) -> list[ModelEntry]:
    """The entries of one kind (every entry for None), in catalogue order."""
    return [e for e in CATALOGUE.values() if kind is None or e.kind == kind]


def get(name: str, kind: str | None = None) -> ModelEntry:
    """The entry called ``name`` (of ``kind`` when given); a ModelError naming the known ones otherwise."""
    entry = CATALOGUE.get(name)
    if entry is not None and (kind is None or entry.kind == kind):
        return entry
    label = f"{KINDS.get(kind, kind)} model" if kind else "model"
    if entry is not None:
        raise ModelError(f"{name} is a {KINDS[entry.kind]} model, not a {label}",
                         fix=f"use one of {', '.join(e.name for e in models(kind))}")
    raise ModelError(f"unknown {label} {name!r}", fix=f"use one of {', '.join(e.name for e in models(kind))}")


def require_available(name: str, model_dir: str | os.PathLike, *, needed_for: str | None = None,
                      otherwise: str | None = None) -> ModelEntry:
    """The entry, if it is on this machine (disk only); else a ModelError whose fix says how to get it.

    Checked before any job folder exists, so that no job starts a multi-gigabyte (gated) download
    halfway. ``needed_for`` names what needs it ("quality mode"), ``otherwise`` the way around it
    ("use mode 'fast'").
    """
    entry = get(name)
    if entry.is_available(model_dir):
        return entry
    who = f"{needed_for} needs the {KINDS[entry.kind]} model {name}, which" if needed_for else f"model {name}"
    fix = entry.how_to_get(model_dir) + (f"; or {otherwise}" if otherwise else "")
    raise ModelError(f"{who} is not available yet (not in {model_dir} nor in its hub cache)", fix=fix)


# ----- licences: which models a commercial job may use --------------------------------------------------


def identify(kind: str, model: str, model_dir: str | os.PathLike | None = None) -> ModelEntry | None:
    """The catalogue entry of ``kind`` that ``model`` names: its name, its hub id, or the folder/file where
    the catalogue finds it under the model folder; None for anything else (a model we know nothing of)."""
    for entry in models(kind):
        if model in (entry.name, entry.hub_id):
            return entry
    path = Path(model).expanduser()
    if not path.exists():
        return None
    for entry in models(kind):
        known = entry.source.bundled_path() or entry.source.local_path(model_dir)
        if known is not None and known.resolve() == path.resolve():
            return entry
    return None


def unknown_licence(model: str) -> dict[str, str | None]:
    """The licence record of a model outside the catalogue (see :meth:`ModelEntry.licence_record`)."""
    return {"name": model, "licence": UNKNOWN, "commercial": UNKNOWN, "condition": None}


def commercial_alternatives(kind: str) -> list[ModelEntry]:
    """The models of ``kind`` whose licence allows commercial use unconditionally (plumbing models left out)."""
    return [e for e in models(kind) if e.commercial == "yes" and not e.source.builtin]


def check_commercial_use(kind: str, model: str, entry: ModelEntry | None) -> str | None:
    """For a commercial-only job: a LicenceError (a ModelError) when ``model`` (of ``kind``; ``entry`` its
    catalogue entry, None when unknown) may not be used commercially, naming the models that may; the
    warning that states the condition for a "conditional" one; None when it is free to use.

    A model outside the catalogue is refused too: nothing says its licence allows commercial use.
    """
    if entry is not None and entry.commercial == "yes":
        return None
    if entry is not None and entry.commercial == "conditional":
        return (f"commercial use of the {KINDS[kind]} model {entry.name} ({entry.licence}) is conditional: "
                f"{entry.condition}")
    allowed = commercial_alternatives(kind)
    option = MODEL_OPTION.get(kind)
    if allowed:
        fix = "use " + " or ".join(
            f"{option + ' ' if option else ''}{e.name} ({e.licence})" for e in allowed[:3])
    else:
        known = ", ".join(e.name for e in models(kind))
        fix = f"use a {KINDS[kind]} model of the catalogue ({known})"
    if entry is None:
        raise LicenceError(f"commercial use only: the {KINDS[kind]} model {model!r} is not in the model catalogue, "
                           "so its licence is unknown", fix=fix + " (a catalogue model is known by its name, its hub "
                           "id or its folder in the model folder)")
    raise LicenceError(f"commercial use only: the {KINDS[kind]} model {entry.name} is licensed {entry.licence}, "
                       "which does not allow commercial use", fix=fix)
