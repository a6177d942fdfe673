"""How a release is stored: its VAE in parts, and every file it shares with its base linked.

A release often keeps most of its base: tiny-ldm@4 is v3's VAE plus a gate,
tiny-ldm@6 is v3 with its decoder's upper half retrained. Storing a VAE as one
safetensors shard per part (encoder, decoder, decoder head, gate), with the index diffusers'
``from_pretrained`` reads, lets such a release link the parts it keeps from its
base, so the bundle carries each weight once.

Example:
    >>> from photoimmune.sdk.models.pipelines import load_vae
    >>> save_vae(load_vae("tiny-ldm@3"), Path("vae"))
    >>> [p.stem for p in sorted(Path("vae").glob("*.safetensors"))]
    ['decoder', 'decoder_head', 'encoder']
"""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

#: The index diffusers reads to load a VAE stored in shards.
VAE_INDEX = "diffusion_pytorch_model.safetensors.index.json"
#: Parts that are more than their top-level module: each convolution between the
#: latent and the autoencoder belongs to the side that owns that latent space.
_PART_OF = {"quant_conv": "encoder", "post_quant_conv": "decoder"}
#: The decoder's upper half, a part of its own: every up block after the first (the
#: one at the latent's resolution) and the output layers. A decoder fine-tune may
#: retrain this half alone (``TrainConfig.decoder_head_only``) and store only it.
DECODER_HEAD = "decoder_head"
#: Parts stored in fp16, which halves the bundle (diffusers loads them back as fp32).
#: Anything else, such as a gate's threshold and seeds, is stored exactly as it is.
_HALF_PARTS = ("encoder", "decoder", DECODER_HEAD)


def vae_part(key: str) -> str:
    """The part of an ``AutoencoderKL`` a weight belongs to, which names its shard.

    Example:
        >>> vae_part("quant_conv.weight"), vae_part("decoder.up_blocks.0.resnets.0.conv1.bias")
        ('encoder', 'decoder')
        >>> vae_part("decoder.up_blocks.2.resnets.0.conv1.bias"), vae_part("honour.seeds")
        ('decoder_head', 'honour')
    """
    module, _, rest = key.partition(".")
    if module == "decoder":
        block, _, index = rest.partition(".")
        if block in ("conv_norm_out", "conv_out") or (
            block == "up_blocks" and not index.startswith("0.")
        ):
            return DECODER_HEAD
    return _PART_OF.get(module, module)


def save_vae(vae: AutoencoderKL, folder: Path) -> None:
    """Write ``vae`` to ``folder`` as one shard per part with its index, replacing
    whatever weights the folder held; the encoder and decoder in fp16.

    Example:
        >>> from photoimmune.sdk.models.pipelines import load_vae
        >>> save_vae(load_vae("tiny-ldm@4"), Path("vae4"))
        >>> [p.stem for p in sorted(Path("vae4").glob("*.safetensors"))]
        ['decoder', 'decoder_head', 'encoder', 'honour']
    """
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("diffusion_pytorch_model.safetensors*"):
        stale.unlink()
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in vae.state_dict().items():
        part = vae_part(key)
        if part in _HALF_PARTS and value.is_floating_point():
            value = value.to(torch.float16)
        parts.setdefault(part, {})[key] = value.detach().cpu().contiguous()
    weight_map, total = {}, 0
    for part, tensors in sorted(parts.items()):
        shard = f"{part}.safetensors"
        _replace(folder / shard, lambda path, tensors=tensors: _save(tensors, path))
        weight_map.update(dict.fromkeys(tensors, shard))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    config = _without_local_path(json.loads(vae.to_json_string()))
    _replace(folder / "config.json", lambda path: path.write_text(config))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    _replace(folder / VAE_INDEX, lambda path: path.write_text(json.dumps(index, indent=2) + "\n"))


def link_shared(out: Path, base: Path) -> None:
    """Replace every file under ``out`` that is byte for byte the file at the same place
    under ``base`` with a relative link to that file, so a release stores only what it
    changed.

    Example:
        >>> out = Path("/tmp/tiny-ldm-6")
        >>> link_shared(out, resolve_model("tiny-ldm@3"))  # doctest: +SKIP
        >>> (out / "unet" / "diffusion_pytorch_model.safetensors").is_symlink()  # doctest: +SKIP
        True
    """
    for file in sorted(out.rglob("*")):
        twin = base / file.relative_to(out)
        if file.is_symlink() or not file.is_file() or not twin.is_file():
            continue
        if filecmp.cmp(file, twin, shallow=False):
            link_file(twin, file)


def link_published_target(base: Path, out: Path) -> None:
    """Link the files of the target ``base`` publishes (its one-pass immunizer, budgets
    and mark) into ``out``, for a release that shares its base's target latent.

    Example:
        >>> out = Path("/tmp/tiny-ldm-6")
        >>> link_published_target(resolve_model("tiny-ldm@3"), out)  # doctest: +SKIP
        >>> (out / "mark.json").is_symlink()  # doctest: +SKIP
        True
    """
    from ..targets import BUNDLED_BUDGETS, BUNDLED_IMMUNIZER, BUNDLED_MARK

    for name in (BUNDLED_IMMUNIZER, BUNDLED_BUDGETS, BUNDLED_MARK):
        files = sorted((base / name).rglob("*")) if (base / name).is_dir() else [base / name]
        for file in (f for f in files if f.is_file()):
            link_file(file, out / file.relative_to(base))


def link_file(source: Path, link: Path) -> None:
    """Make ``link`` a relative link to the file ``source`` leads to, replacing whatever
    ``link`` was (a link is replaced, never written through).

    Example:
        >>> _ = Path("a.json").write_text("{}")
        >>> link_file(Path("a.json"), Path("release/b.json"))
        >>> os.readlink("release/b.json")
        '../a.json'
    """
    link.parent.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(source.resolve(), link.parent.resolve())
    _replace(link, lambda path: path.symlink_to(target))


def drop_local_path(config: Path) -> None:
    """Rewrite a saved diffusers ``config.json`` without the folder it was loaded from.

    diffusers records that folder as ``_name_or_path``; a local path is no part of a
    release, and it would keep two configs that are otherwise the same from being
    linked (:func:`link_shared`).

    Example:
        >>> _ = Path("config.json").write_text('{"_name_or_path": "/tmp/x", "a": 1}')
        >>> drop_local_path(Path("config.json"))
        >>> json.loads(Path("config.json").read_text())
        {'a': 1}
    """
    text = _without_local_path(json.loads(config.read_text()))
    _replace(config, lambda path: path.write_text(text))


def _without_local_path(config: dict) -> str:
    config.pop("_name_or_path", None)
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, path, metadata={"format": "pt"})


def _replace(path: Path, write) -> None:
    """Write ``path`` through a temporary name beside it, so a reader never sees half."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    write(temporary)
    os.replace(temporary, path)


__all__ = [
    "DECODER_HEAD",
    "VAE_INDEX",
    "drop_local_path",
    "link_file",
    "link_published_target",
    "link_shared",
    "save_vae",
    "vae_part",
]
