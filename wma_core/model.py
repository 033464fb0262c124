"""The ViLT wrapper: image+text and feature-sequence modalities, per-modality output tokens.

Built on transformers' ViLT modules (``ViltModel``'s embeddings, encoder layers, final norm
and pooler), so the weights of ``dandelin/vilt-b32-mlm`` load unchanged. What it adds:

- the perturbation hook of :mod:`wma_core.perturb`, applied to each modality's embedding
  features before the modality-type embedding;
- the split of the output sequence back into modalities (``tokens[m]``: ``[B, L_m, h]``
  without the CLS row, ``token_masks[m]``: ``[B, L_m]`` valid tokens, text ``[SEP]`` dropped
  as ViLT's word-patch alignment does, unless ``drop_sep=False``);
- feature-sequence modalities (UR-FUNNY, MOSEI): each gets ``Linear(d_m, h)``, a CLS row,
  position embeddings and a LayerNorm (``feature_norm``); modality-type rows go by name
  (:func:`~wma_core.embeddings.modality_type_rows`: text 0, video 1 as the image row, audio a new
  row initialised from row 1, ViLT's NLVR2 recipe). These embeddings are new weights: the OT
  distance between feature modalities at initialisation (D0) is the geometry the pretrained
  encoder gives freshly projected features, not an alignment learned in pretraining (as with
  ViLT-B's feature tasks in the paper);
- image patches in raster order by default (``patch_order="raster"``), one interpolation of
  the position embeddings per distinct image size rather than per sample, uint8 pixels
  normalised on the device (mean = std = 0.5, ViLT's processor); ``patch_order="hf"`` calls
  transformers' own ``visual_embed`` (random patch order, consumes the global RNG);
- optional SDPA attention (``attn="sdpa"``) using the same layer weights.

With nothing perturbed, ``last_hidden_state`` equals ``ViltModel``'s for the same weights:
token for token on the text side, as a set on the image side (raster vs random order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import perturb as P
from .embeddings import (FeatureEmbedding, grow_modality_types, modality_type_rows, normalise_pixels, type_embed,
                         visual_embed_hf, visual_embed_raster)

#: The embedded default: a tiny randomly initialised ViLT that trains on 2 CPU cores.
TINY_CONFIG = dict(
    hidden_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=512,
    image_size=64,
    patch_size=16,
    max_position_embeddings=40,
    vocab_size=2000,
    max_image_length=-1,
)


@dataclass
class WMAOutput:
    """Backbone output.

    Attributes:
        last_hidden_state: ``[B, L, h]`` after the final LayerNorm.
        attention_mask: ``[B, L]`` long, 1 on real tokens.
        pooler_output: ``[B, h]`` ViLT's pooler (dense + tanh on token 0).
        tokens: ``{m: [B, L_m, h]}`` output tokens of modality m without its CLS row.
        token_masks: ``{m: [B, L_m]}`` bool, valid tokens (padding and, by default, text [SEP] off).
        cls: ``{m: [B, h]}`` the output at each modality's CLS row.
    """

    last_hidden_state: torch.Tensor
    attention_mask: torch.Tensor
    pooler_output: torch.Tensor
    tokens: dict = field(default_factory=dict)
    token_masks: dict = field(default_factory=dict)
    cls: dict = field(default_factory=dict)


class WMAVilt(nn.Module):
    """ViLT backbone with perturbation hooks and per-modality token split.

    Args:
        vilt: a transformers ``ViltModel`` (its weights are used as they are).
        feature_dims: ``{name: d}`` for feature-sequence modalities, in order (e.g.
            ``{"text": 300, "video": 35, "audio": 74}``); ``None`` for image+text.
        feature_len: the longest feature sequence (time steps).
        patch_order: ``"raster"`` (default) or ``"hf"`` (transformers' random order).
        drop_sep: drop the text ``[SEP]`` token from ``tokens["text"]`` (ViLT's WPA does).
        attn: ``"eager"`` (transformers' layers as they are) or ``"sdpa"``.
        feature_norm: a LayerNorm after each feature projection (:class:`FeatureEmbedding`).
    """

    def __init__(
        self,
        vilt: ViltModel,
        feature_dims: dict | None = None,
        feature_len: int = 50,
        patch_order: str = "raster",
        drop_sep: bool = True,
        attn: str = "eager",
        feature_norm: bool = True,
    ):
        super().__init__()
        if patch_order not in ("raster", "hf"):
            raise ValueError(f"patch_order must be 'raster' or 'hf', got {patch_order!r}")
        if attn not in ("eager", "sdpa"):
            raise ValueError(f"attn must be 'eager' or 'sdpa', got {attn!r}")
        if vilt.pooler is None:
            raise ValueError("the ViltModel needs its pooler (add_pooling_layer=True)")
        self.vilt = vilt
        self.config: ViltConfig = vilt.config
        self.patch_order = patch_order
        self.drop_sep = drop_sep
        self.attn = attn
        self.feature_dims = dict(feature_dims or {})
        h = self.config.hidden_size
        if self.feature_dims:
            self.features = nn.ModuleDict(
                {m: FeatureEmbedding(d, h, feature_len, self.config.initializer_range, norm=feature_norm,
                                     eps=self.config.layer_norm_eps) for m, d in self.feature_dims.items()}
            )
            self.modalities = tuple(self.feature_dims)
        else:
            self.features = None
            self.modalities = ("text", "image")
        self.type_rows = modality_type_rows(self.modalities)  # by name: text 0, image/video 1, others 2..
        grow_modality_types(self.vilt.embeddings, self.config, max(self.type_rows.values()) + 1)

    # -- embeddings (wma_core.embeddings) --------------------------------------------------
    def embed_image_text(self, input_ids, attention_mask, pixel_values, pixel_mask, perturbation=None, sample_ids=None):
        """Embeddings ``[B, Lt + 1 + Li, h]``, mask, and the (start, end) span of each modality."""
        dtype = self.vilt.embeddings.patch_embeddings.projection.weight.dtype
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if pixel_mask is None:
            pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[-2:], dtype=torch.long, device=pixel_values.device)
        pixel_values = normalise_pixels(pixel_values, dtype)
        text = self.vilt.embeddings.text_embeddings(input_ids=input_ids)  # [B, Lt, h]
        text = P.apply(perturbation, "text", text, sample_ids)
        if self.patch_order == "raster":
            image, image_mask, canon = visual_embed_raster(self.vilt.embeddings, self.config, pixel_values, pixel_mask)
        else:
            image, image_mask, canon = visual_embed_hf(self.vilt.embeddings, self.config, pixel_values, pixel_mask)
        image = P.apply(perturbation, "image", image, sample_ids, canon)
        text = type_embed(self.vilt.embeddings, text, self.type_rows["text"])
        image = type_embed(self.vilt.embeddings, image, self.type_rows["image"])
        emb = torch.cat([text, image.to(text.dtype)], dim=1)
        mask = torch.cat([attention_mask.long(), image_mask], dim=1)
        Lt = text.shape[1]
        return emb, mask, {"text": (0, Lt), "image": (Lt, emb.shape[1])}

    def embed_features(self, features, feature_masks, perturbation=None, sample_ids=None):
        """Embeddings of the feature modalities, concatenated in ``feature_dims`` order."""
        embs, masks, spans, start = [], [], {}, 0
        for m in self.feature_dims:
            if m not in features:
                raise KeyError(f"batch has no features for modality {m!r} (has {sorted(features)})")
            e = self.features[m](features[m])  # [B, 1 + T, h]
            e = P.apply(perturbation, m, e, sample_ids)
            e = type_embed(self.vilt.embeddings, e, self.type_rows[m])
            fm = feature_masks[m] if feature_masks is not None and m in feature_masks else torch.ones(e.shape[:2][0], e.shape[1] - 1)
            mk = torch.cat([torch.ones(e.shape[0], 1, dtype=torch.long, device=e.device), fm.to(e.device).long()], dim=1)
            embs.append(e)
            masks.append(mk)
            spans[m] = (start, start + e.shape[1])
            start += e.shape[1]
        return torch.cat(embs, dim=1), torch.cat(masks, dim=1), spans

    # -- encoder -----------------------------------------------------------------------------
    def _encode(self, emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.attn == "eager":
            additive = (1.0 - mask[:, None, None, :].to(emb.dtype)) * torch.finfo(emb.dtype).min
            h = emb
            for layer in self.vilt.encoder.layer:
                h = layer(h, additive)[0]
            return h
        return _encode_sdpa(self.vilt.encoder.layer, emb, mask.bool(), self.training)

    # -- forward -----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_mask: torch.Tensor | None = None,
        features: dict | None = None,
        feature_masks: dict | None = None,
        perturbation: P.Perturbation | None = None,
        sample_ids: torch.Tensor | None = None,
    ) -> WMAOutput:
        """Image+text (``input_ids``, ``attention_mask``, ``pixel_values`` [uint8 or float],
        ``pixel_mask``) or feature sequences (``features``/``feature_masks`` dicts of
        ``[B, T, d_m]`` / ``[B, T]``). ``perturbation`` needs ``sample_ids`` ``[B]``."""
        if self.features is not None:
            if features is None:
                raise ValueError(f"this model takes feature sequences for {self.modalities}; got none")
            emb, mask, spans = self.embed_features(features, feature_masks, perturbation, sample_ids)
        else:
            if input_ids is None or pixel_values is None:
                raise ValueError("this model takes input_ids and pixel_values (image+text)")
            emb, mask, spans = self.embed_image_text(input_ids, attention_mask, pixel_values, pixel_mask, perturbation, sample_ids)
        hidden = self.vilt.layernorm(self._encode(emb, mask))
        out = WMAOutput(last_hidden_state=hidden, attention_mask=mask, pooler_output=self.vilt.pooler(hidden))
        return split_modalities(out, spans, drop_sep=self.drop_sep and self.features is None)


def split_modalities(out: WMAOutput, spans: dict, *, drop_sep: bool) -> WMAOutput:
    """Fill ``out.cls``, ``out.tokens`` and ``out.token_masks`` from the encoder output.

    ``spans``: ``{m: (start, end)}`` of each modality in the sequence, CLS row first. With
    ``drop_sep`` the text side's last valid token ([SEP]) is masked out, as ViLT's WPA does.
    """
    hidden, mask = out.last_hidden_state, out.attention_mask
    valid = mask.bool()
    for m, (s, e) in spans.items():
        out.cls[m] = hidden[:, s]
        out.tokens[m] = hidden[:, s + 1 : e]
        tm = valid[:, s + 1 : e].clone()
        if m == "text" and drop_sep:
            last = mask[:, s:e].sum(1) - 2  # index of [SEP] within tokens (CLS excluded); no host sync
            tm &= torch.arange(tm.shape[1], device=tm.device)[None, :] != last[:, None]
        out.token_masks[m] = tm
    return out


def _encode_sdpa(layers, h: torch.Tensor, key_mask: torch.Tensor, training: bool) -> torch.Tensor:
    """transformers' ViltLayer stack with ``F.scaled_dot_product_attention`` (same weights).

    ``key_mask``: ``[B, L]`` bool, True on tokens that may be attended to.
    """
    attn_mask = key_mask[:, None, None, :]  # [B, 1, 1, L]
    for layer in layers:
        sa = layer.attention.attention
        B, L, _ = h.shape
        x = layer.layernorm_before(h)
        q, k, v = (
            proj(x).view(B, L, sa.num_attention_heads, sa.attention_head_size).transpose(1, 2)
            for proj in (sa.query, sa.key, sa.value)
        )
        p = sa.dropout.p if training else 0.0
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        ctx = ctx.transpose(1, 2).reshape(B, L, sa.all_head_size)
        h = layer.attention.output(ctx, h) + h
        y = layer.intermediate(layer.layernorm_after(h))
        h = layer.output(y, h)
    return h


class TaskHead(nn.Sequential):
    """``Linear(h, 2h) -> LayerNorm -> GELU -> Linear(2h, n_out)`` on the pooled output."""

    def __init__(self, hidden: int, n_out: int, init_std: float = 0.02):
        super().__init__(nn.Linear(hidden, 2 * hidden), nn.LayerNorm(2 * hidden), nn.GELU(), nn.Linear(2 * hidden, n_out))
        for mod in self:
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=init_std)
                nn.init.zeros_(mod.bias)


#: What the task head reads (:class:`WMAClassifier`).
READOUTS = ("pooler", "mean")


def mean_tokens(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens of each sample, ``[B, h]``.

    ``hidden``: ``[B, L, h]``; ``mask``: ``[B, L]``, nonzero on real tokens (every modality's
    CLS rows and tokens, padding off). ``out[b] = sum_l mask[b, l] hidden[b, l] / sum_l mask[b, l]``;
    a sample without any real token (which the wrapper never builds) gives zeros, not NaN.
    """
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class WMAClassifier(nn.Module):
    """Backbone + task head. ``forward(batch, perturbation)`` -> ``(logits [B, n_out], WMAOutput)``.

    The head's output is a logit for binary (``n_out=1``) and multi-label tasks and the
    prediction itself for regression. ``readout`` says what the head reads:

    - ``"pooler"``: ViLT's pooler, ``tanh(W h_0 + b)`` on the first token (what ViLT's own task
      heads read); in a pretrained backbone this is the row that pretraining's ITM head read;
    - ``"mean"``: :func:`mean_tokens` of the final hidden states, every modality's real tokens
      with equal weight (the pooler is then unused).
    """

    def __init__(self, backbone: WMAVilt, n_out: int, readout: str = "pooler"):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.backbone = backbone
        self.readout = readout
        self.head = TaskHead(backbone.config.hidden_size, n_out, backbone.config.initializer_range)

    @property
    def modalities(self) -> tuple:
        return self.backbone.modalities

    def forward(self, batch: dict, perturbation: P.Perturbation | None = None):
        out = self.backbone(
            input_ids=batch.get("input_ids"),
            attention_mask=batch.get("attention_mask"),
            pixel_values=batch.get("pixel_values"),
            pixel_mask=batch.get("pixel_mask"),
            features=batch.get("features"),
            feature_masks=batch.get("feature_masks"),
            perturbation=perturbation,
            sample_ids=batch.get("ids"),
        )
        pooled = out.pooler_output if self.readout == "pooler" else mean_tokens(out.last_hidden_state, out.attention_mask)
        # the head in float32 under any autocast: bf16 logits (8 bits of mantissa) would tie
        # samples whose scores differ by less than 0.4 %, and ties move AUROC and F1
        with torch.autocast(pooled.device.type, enabled=False):
            return self.head(pooled.float()), out


#: Heads of ViLT checkpoints that the backbone leaves out on purpose (MLM, ITM, VQA, ...).
_HEAD_PREFIXES = ("mlm_score.", "itm_score.", "classifier.", "vqa_classifier.", "nlvr2_classifier.", "rank_output.")


def _backbone_from_pretrained(name: str, **kwargs) -> ViltModel:
    """``ViltModel.from_pretrained`` that is quiet about the heads of a pretraining checkpoint
    (``ViltForMaskedLM``'s ``mlm_score``: dropped by design) and loud about anything else: a
    backbone weight missing from the checkpoint, or an unexpected key that is not a known head,
    is a warning naming the keys."""
    import logging as _logging

    from transformers.utils import logging as tlogging

    tlog = _logging.getLogger("transformers")
    level, bars = tlog.level, tlogging.is_progress_bar_enabled()
    tlog.setLevel(_logging.ERROR)
    tlogging.disable_progress_bar()  # a bar per load of a 4 MB checkpoint says nothing
    try:
        from transformers import ViltModel  # here, not at import: the study layer loads wma_core without it

        vilt, info = ViltModel.from_pretrained(name, output_loading_info=True, **kwargs)
    finally:
        tlog.setLevel(level)
        if bars:
            tlogging.enable_progress_bar()
    odd = [k for k in info.get("unexpected_keys", []) if not k.startswith(_HEAD_PREFIXES)]
    missing = list(info.get("missing_keys", []))
    if missing or odd or info.get("mismatched_keys"):
        import warnings

        warnings.warn(f"{name}: backbone weights missing {missing[:8]}, unexpected {odd[:8]}, "
                      f"mismatched {list(info.get('mismatched_keys', []))[:8]}", stacklevel=3)
    return vilt


def load_vilt(
    name_or_path: str = "tiny",
    *,
    feature_dims: dict | None = None,
    feature_len: int = 50,
    patch_order: str = "raster",
    drop_sep: bool = True,
    attn: str = "eager",
    init_seed: int | None = 0,
    feature_norm: bool = True,
    **overrides,
) -> WMAVilt:
    """Load a ViLT backbone.

    Args:
        name_or_path: ``"tiny"`` (the embedded default: :data:`TINY_CONFIG`, random weights),
            a hub name such as ``"dandelin/vilt-b32-mlm"``, or a local folder written by
            ``ViltModel.save_pretrained`` (or any ViLT checkpoint's ``save_pretrained``). A folder
            is read without network access; a hub name comes from the hub cache, else the hub
            (:func:`data_prep.checkpoints.load`: offline, it fails at once with what to do).
        feature_dims, feature_len, patch_order, drop_sep, attn, feature_norm: see :class:`WMAVilt`.
        init_seed: seed for every randomly initialised weight (tiny model, feature
            embeddings); ``None`` uses the global RNG as it is.
        **overrides: ``ViltConfig`` fields (e.g. ``vocab_size``, ``hidden_size``).
    """
    with torch.random.fork_rng(devices=[]):
        if init_seed is not None:
            torch.manual_seed(init_seed)
        if name_or_path == "tiny":
            from transformers import ViltConfig, ViltModel

            vilt = ViltModel(ViltConfig(**{**TINY_CONFIG, **overrides}))
        else:
            from data_prep.checkpoints import load

            # a folder loads with local_files_only; a hub name not cached fails at once when offline
            # (CheckpointError, an OSError saying what to do)
            vilt = load(_backbone_from_pretrained, name_or_path, what="ViLT weights", **overrides)
        return WMAVilt(vilt, feature_dims, feature_len, patch_order, drop_sep, attn, feature_norm)
