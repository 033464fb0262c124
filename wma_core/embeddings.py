"""Embeddings of each modality, before the encoder (as transformers' ``ViltEmbeddings`` is apart
from ``ViltModel``): text via transformers' own ``text_embeddings``; image patches in raster
order with each sample's valid patches packed first; feature sequences (``Linear(d, h)`` + CLS
row + positions + LayerNorm); the modality-type rows, assigned by name. Functions take transformers' ``ViltEmbeddings``
module as it is, so the weights of ``dandelin/vilt-b32-mlm`` load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PIXEL_MEAN = 0.5  # ViltImageProcessor's image_mean / image_std (all channels)
PIXEL_STD = 0.5

def normalise_pixels(pixel_values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` in 0..255 -> ``(x / 255 - mean) / std``; float input passes through."""
    if pixel_values.dtype == torch.uint8:
        return ((pixel_values.to(dtype) / 255.0) - PIXEL_MEAN) / PIXEL_STD
    return pixel_values.to(dtype)


class FeatureEmbedding(nn.Module):
    """``Linear(d, h)`` + CLS row + learned positions (+ LayerNorm) for one feature-sequence modality.

    ``x [B, T, d]`` -> ``e = LN([cls; x W^T + b] + pos[: 1 + T])``, ``[B, 1 + T, h]``: the same
    order as ViLT's text path (word + position, then LayerNorm; the modality-type row is added
    after, :func:`type_embed`). Without the LayerNorm (``norm=False``) the projected features enter
    the pretrained encoder at a norm of about 1.5 against about 17 for text and image tokens, and
    after four layers every feature token points the same way (mean pairwise cosine 0.73).
    """

    def __init__(self, dim: int, hidden: int, max_len: int, init_std: float = 0.02, norm: bool = True,
                 eps: float = 1e-12):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
        self.pos = nn.Parameter(torch.randn(1, max_len + 1, hidden) * init_std)
        self.norm = nn.LayerNorm(hidden, eps=eps) if norm else None
        nn.init.normal_(self.proj.weight, std=init_std)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, d]`` -> ``[B, 1 + T, h]`` (CLS row first)."""
        B, T, _ = x.shape
        if T + 1 > self.pos.shape[1]:
            raise ValueError(f"feature sequence of length {T} exceeds max_len {self.pos.shape[1] - 1}")
        e = self.proj(x.to(self.proj.weight.dtype))
        e = torch.cat([self.cls.expand(B, -1, -1), e], dim=1) + self.pos[:, : T + 1]
        return self.norm(e) if self.norm is not None else e


#: The modality-type rows a pretrained ViLT already has: 0 for text, 1 for image. A video stream is
#: a sequence of frames, so it takes the image row; any other modality gets a new row.
PRETRAINED_TYPE_ROWS = {"text": 0, "image": 1, "video": 1}


def modality_type_rows(modalities) -> dict[str, int]:
    """``{modality: row}`` by name, never by position: text -> 0, image or video -> 1, every other
    modality (audio, ...) a new row from 2 on, in the given order (:func:`grow_modality_types`
    initialises those from row 1, ViLT's NLVR2 recipe).

    >>> modality_type_rows(("audio", "text", "video"))
    {'audio': 2, 'text': 0, 'video': 1}
    """
    rows, new = {}, 2
    for m in modalities:
        if m in PRETRAINED_TYPE_ROWS:
            rows[m] = PRETRAINED_TYPE_ROWS[m]
        else:
            rows[m], new = new, new + 1
    return rows


def grow_modality_types(embeddings, config, n: int) -> None:
    """Grow ``embeddings.token_type_embeddings`` to ``n`` rows, the new ones copied from row 1
    (ViLT's NLVR2 recipe); ``config.modality_type_vocab_size`` follows."""
    old = embeddings.token_type_embeddings
    if old.num_embeddings >= n:
        return
    new = nn.Embedding(n, old.embedding_dim).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight[: old.num_embeddings] = old.weight
        new.weight[old.num_embeddings :] = old.weight[1]
    embeddings.token_type_embeddings = new
    config.modality_type_vocab_size = n


def type_embed(embeddings, x: torch.Tensor, type_id: int) -> torch.Tensor:
    """``x + token_type_embeddings[type_id]`` (the modality-type row), in ``x``'s dtype."""
    table = embeddings.token_type_embeddings
    return x + table.weight[type_id].to(x.dtype)


def visual_embed_raster(emb_mod, cfg, pixel_values: torch.Tensor, pixel_mask: torch.Tensor):
    """Patch tokens of transformers' ``ViltEmbeddings`` ``emb_mod`` (config ``cfg``) in raster order, each sample's valid patches first (:func:`pack_valid`).

    Returns ``emb [B, 1 + n, h]`` (CLS row first, patch + position, before the modality
    type), ``mask [B, 1 + n]`` long, ``canon [B, n]`` (row * w_i + col, -1 on pads), with
    ``n`` the largest number of valid patches in the batch (``gh*gw`` when every image of
    the batch has the padded grid's shape).
    """
    x = emb_mod.patch_embeddings(pixel_values)  # [B, h, gh, gw]
    B, hdim, gh, gw = x.shape
    xm = F.interpolate(pixel_mask[:, None].float(), size=(gh, gw)).long()[:, 0]  # [B, gh, gw]
    x_h = xm.sum(dim=1)[:, 0]  # [B] valid patch rows (ViLT's rule)
    x_w = xm.sum(dim=2)[:, 0]  # [B] valid patch columns
    n_valid = x_h * x_w
    if cfg.max_image_length is not None and cfg.max_image_length > 0 and int(n_valid.max()) > cfg.max_image_length:
        raise ValueError(
            f"max_image_length={cfg.max_image_length} keeps a random subset of patches; "
            "use patch_order='hf' for that configuration"
        )
    side = cfg.image_size // cfg.patch_size
    spatial = emb_mod.position_embeddings[:, 1:, :].transpose(1, 2).reshape(1, hdim, side, side)
    pos = x.new_zeros(B, hdim, gh, gw)
    sizes = torch.stack([x_h, x_w], dim=1)  # [B, 2]
    for hw in torch.unique(sizes, dim=0).tolist():  # one interpolation per distinct size
        hh, ww = hw
        if hh == 0 or ww == 0:
            continue
        rows = (sizes == sizes.new_tensor(hw)).all(dim=1)
        grid = F.interpolate(spatial, size=(hh, ww), mode="bilinear", align_corners=True)
        pos[rows, :, :hh, :ww] = grid.to(pos.dtype)
    valid = (torch.arange(gh, device=x.device)[None, :, None] < x_h[:, None, None]) & (
        torch.arange(gw, device=x.device)[None, None, :] < x_w[:, None, None]
    )  # [B, gh, gw]
    canon = torch.arange(gh, device=x.device)[None, :, None] * x_w[:, None, None] + torch.arange(
        gw, device=x.device
    )[None, None, :]
    canon = torch.where(valid, canon, torch.full_like(canon, -1)).flatten(1)  # [B, gh*gw]
    patches = (x + pos).flatten(2).transpose(1, 2)  # [B, gh*gw, h]
    valid = valid.flatten(1)  # [B, gh*gw]
    patches, valid, canon = pack_valid(patches, valid, canon)  # [B, n_max, h], n_max = most valid patches
    cls = (emb_mod.cls_token + emb_mod.position_embeddings[:, :1]).expand(B, -1, -1).to(patches.dtype)
    emb = emb_mod.dropout(torch.cat([cls, patches], dim=1))
    mask = torch.cat([torch.ones(B, 1, dtype=torch.long, device=x.device), valid.long()], dim=1)
    return emb, mask, canon


def visual_embed_hf(emb_mod, cfg, pixel_values: torch.Tensor, pixel_mask: torch.Tensor):
    """transformers' ``visual_embed`` (random patch order); same outputs as the raster version."""
    emb, mask, (patch_index, _) = emb_mod.visual_embed(
        pixel_values, pixel_mask, max_image_length=cfg.max_image_length
    )
    # canonical index of each kept patch: row * w_i + col within the sample's own grid
    ph = cfg.patch_size
    xm = F.interpolate(
        pixel_mask[:, None].float(), size=(pixel_values.shape[-2] // ph, pixel_values.shape[-1] // ph)
    ).long()[:, 0]
    x_w = xm.sum(dim=2)[:, 0]
    canon = patch_index[..., 0] * x_w[:, None] + patch_index[..., 1]
    canon = torch.where(mask[:, 1:].bool(), canon, torch.full_like(canon, -1))
    return emb, mask.long(), canon


def pack_valid(tokens: torch.Tensor, valid: torch.Tensor, canon: torch.Tensor):
    """Move each sample's valid patches to the front (raster order kept) and cut the trailing
    positions that are then padding in every sample.

    A batch of images of different shapes is zero-padded to its largest height and width, so the
    patch grid holds padding that attention masks out but the layers would still compute (a third
    of the image tokens of a Hateful Memes batch). Packed, the image part is as long as the
    largest valid grid of the batch, as in transformers' ``visual_embed``.

    Args:
        tokens: ``[B, P, h]`` patch embeddings in raster order of the padded grid.
        valid: ``[B, P]`` bool; canon: ``[B, P]`` long canonical indices (-1 on padding).
    Returns:
        ``(tokens [B, n, h], valid [B, n], canon [B, n])`` with ``n = max_b valid[b].sum()``.
    """
    n = int(valid.sum(1).max())
    if n == valid.shape[1]:
        return tokens, valid, canon  # some sample fills the whole grid: nothing to cut
    # stable sort: valid patches first, each side in raster order
    order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices[:, :n]  # [B, n]
    tokens = tokens.gather(1, order[..., None].expand(-1, -1, tokens.shape[-1]))
    return tokens, valid.gather(1, order), canon.gather(1, order)
