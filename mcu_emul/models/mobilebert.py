"""MobileBERT encoder on one chip's shard, in integer arithmetic.

Chip c owns columns [x0, x1) of the 512-wide hidden stream, heads [h0, h1), units [i0, i1) of
every stacked FFN and vocab rows [v0, v1). Synchronizations (int32 partial-sum all-reduces):
- embedding: word-embedding rows from their owners (1 per inference);
- per block: (1) bottleneck-input, bottleneck-attention and value projections, whose input is
  the hidden stream split by columns, travel as one buffer; (2) attention output; (3..) one per
  stacked FFN. The output bottleneck produces this chip's own hidden columns: no sync.
  So 2 + n_ffn = 6 per block for mobilebert-uncased, 145 per inference with the embedding.
Residual streams (hidden and bottleneck) are int16; every matmul input is int8. A pipeline
stage (pipeline.py) owns every column, head and unit of a range of layers, and the embeddings or not.
"""
from __future__ import annotations

import numpy as np

from ..numerics import kernels as K
from ..config import MobileBertConfig
from .layout import Spec, matrix, vector
from .partition import ChipSlice
from ..numerics.quant import ScaleMap, scale_for

LOG2E = 1.4426950408889634


def specs(cfg: MobileBertConfig, sl: ChipSlice, seq_len: int, layers: tuple | None = None,
          embedding: bool = True) -> list[Spec]:
    """Every buffer chip `sl` holds: slices of the blocks `layers` (default all) and, with
    `embedding`, of the embeddings."""
    l0, l1 = layers or (0, cfg.n_layers)
    H, B, I, E = cfg.hidden, cfg.bottleneck, cfg.intermediate, cfg.embedding_size
    hd = cfg.head_dim
    xs, hc, fi = sl.hidden, (sl.heads[0] * hd, sl.heads[1] * hd), sl.ffn
    nx, nh, ni = xs[1] - xs[0], hc[1] - hc[0], fi[1] - fi[0]
    S = seq_len
    # live full-sequence tensors in L2: hidden slice (int16) and its int8 copy, two bottleneck
    # streams (int16), shared/value (int8), q/k/context (int8), FFN middle (int8), and the int32
    # all-reduce buffer; scores, probabilities and matmul accumulators are tiled through L1.
    act = (S * nx * 3 + S * B * 2 * 2 + S * B * 2 + S * nh * 3 + S * ni + S * 3 * B * 4)
    out = [Spec("activations", "activations", (act,), "uint8")]
    for l in range(l0, l1):
        p = f"layers.{l}."
        out += matrix(p + "bn_in.w", (B, H), cols=xs) + matrix(p + "bn_att.w", (B, H), cols=xs)
        out += matrix(p + "v.w", (B, H), cols=xs)
        out += matrix(p + "q.w", (B, B), rows=hc) + matrix(p + "k.w", (B, B), rows=hc)
        out += [vector(p + "q.b", B, rows=hc), vector(p + "k.b", B, rows=hc)]
        out += matrix(p + "att_out.w", (B, B), cols=hc)
        for n in ("bn_in.b", "bn_att.b", "v.b", "att_out.b", "bn_in_norm.w", "bn_in_norm.b",
                  "bn_att_norm.w", "bn_att_norm.b", "att_norm.w", "att_norm.b"):
            out.append(vector(p + n, B))
        for f in range(cfg.n_ffn):
            fp = f"{p}ffn{f}."
            out += matrix(fp + "in.w", (I, B), rows=fi) + [vector(fp + "in.b", I, rows=fi)]
            out += matrix(fp + "out.w", (B, I), cols=fi)
            out += [vector(fp + n, B) for n in ("out.b", "norm.w", "norm.b")]
        out += matrix(p + "out_bn.w", (H, B), rows=xs)
        out += [vector(p + n, H, rows=xs) for n in ("out_bn.b", "out_norm.w", "out_norm.b")]
    if not embedding:
        return out
    out += matrix("emb_transform.w", (H, 3 * E), rows=xs) + [vector("emb_transform.b", H, rows=xs)]
    out += [vector("emb_norm.w", H, rows=xs), vector("emb_norm.b", H, rows=xs)]
    out += matrix("pos_emb", (cfg.max_positions, H), rows=(0, S), cols=xs)
    out += matrix("type_emb", (cfg.type_vocab_size, H), cols=xs)
    out += matrix("word_emb", (cfg.vocab_size, E), rows=sl.vocab)
    return out


def _f64(a):
    return np.asarray(a, np.float64)


def work_class(cfg: MobileBertConfig, sl: ChipSlice) -> tuple:
    """What a chip's charged work depends on besides its placement and input_fetches: the
    sizes of its slices."""
    return (sl.heads[1] - sl.heads[0], sl.ffn[1] - sl.ffn[0], sl.vocab[1] - sl.vocab[0],
            sl.hidden[1] - sl.hidden[0])


def input_fetches(cfg: MobileBertConfig, sl: ChipSlice, inputs) -> dict:
    """The work that depends on the input ids: a chip fetches the word-embedding rows of the
    ids in its vocabulary rows (weight key -> bytes; none, no fetch), before the first all-reduce."""
    ids = np.asarray(inputs)
    own = int(np.count_nonzero((ids >= sl.vocab[0]) & (ids < sl.vocab[1])))
    return {"word_emb": own * cfg.embedding_size} if own else {}


class MobileBertChip:
    """One chip's integer encoder. t: key -> array (from specs); sync: .sum collective."""

    def __init__(self, cfg: MobileBertConfig, sl: ChipSlice, t: dict, amax: dict, sync, meter,
                 layers: tuple | None = None, embedding: bool = True):
        """layers: the blocks this chip runs (default all); embedding: it holds the embeddings
        (a pipeline stage may not)."""
        self.cfg, self.sl, self.sync, self.meter, self.t = cfg, sl, sync, meter, t
        self.l0, self.l1 = layers or (0, cfg.n_layers)
        # the meter's kernels: the real ones, or shape-only stand-ins in a dry run
        self.K, self.Rq = meter.K, meter.Rq
        Rq = self.Rq
        S8 = ScaleMap(amax)
        self.s_x = s_x = scale_for(amax["x"], 16)
        self.s_b = s_b = scale_for(amax["bneck"], 16)
        self.s_tri = s_tri = S8["tri"]
        self.w = {k: self.K.QWeight(v) for k, v in t.items() if v.dtype == np.int8 and v.ndim == 2
                  and k not in ("word_emb", "pos_emb", "type_emb")}
        sc = lambda n: _f64(t[n + ".scale"])          # noqa: E731
        if embedding:
            self.rq_word = sc("word_emb") / s_tri
            nw, nb = _f64(t["emb_norm.w"]), _f64(t["emb_norm.b"])
            self.emb = dict(bq=np.rint(_f64(t["emb_transform.b"]) / (s_tri * sc("emb_transform.w"))).astype(np.int64),
                            rq=Rq(s_tri * sc("emb_transform.w") * nw / s_x),
                            rq_pos=Rq(sc("pos_emb")[:, None] * nw[None, :] / s_x),
                            rq_type=Rq(sc("type_emb")[:, None] * nw[None, :] / s_x),
                            nb=np.rint(nb / s_x).astype(np.int64))
        hd = cfg.head_dim
        self.layers = []
        for l in range(self.l0, self.l1):
            p = f"layers.{l}."
            g = lambda n: _f64(t[p + n])              # noqa: E731
            s = lambda n: S8[f"{l}.{n}"]              # noqa: E731
            x8, sh, sq, sk, sv, sctx = s("x8"), s("shared"), s("q"), s("k"), s("v"), s("ctx")
            L = dict(
                rq_x8=Rq(s_x / x8),
                bq_in=np.rint(g("bn_in.b") / (x8 * sc(p + "bn_in.w"))).astype(np.int64),
                rq_in=Rq(x8 * sc(p + "bn_in.w") * g("bn_in_norm.w") / s_b),
                nb_in=np.rint(g("bn_in_norm.b") / s_b).astype(np.int64),
                bq_att=np.rint(g("bn_att.b") / (x8 * sc(p + "bn_att.w"))).astype(np.int64),
                rq_att=Rq(x8 * sc(p + "bn_att.w") * g("bn_att_norm.w") / sh),
                nb_att=np.rint(g("bn_att_norm.b") / sh).astype(np.int64),
                bq_v=np.rint(g("v.b") / (x8 * sc(p + "v.w"))).astype(np.int64),
                rq_v=Rq(x8 * sc(p + "v.w") / sv),
                bq_q=np.rint(g("q.b") / (sh * sc(p + "q.w"))).astype(np.int64), rq_q=Rq(sh * sc(p + "q.w") / sq),
                bq_k=np.rint(g("k.b") / (sh * sc(p + "k.w"))).astype(np.int64), rq_k=Rq(sh * sc(p + "k.w") / sk),
                sm=Rq(sq * sk / np.sqrt(hd) * LOG2E * 256), rq_ctx=Rq(sv / K.SOFTMAX_ONE / sctx),
                bq_o=np.rint(g("att_out.b") / (sctx * sc(p + "att_out.w"))).astype(np.int64),
                rq_o=Rq(sctx * sc(p + "att_out.w") * g("att_norm.w") / s_b),
                rq_o_res=Rq(g("att_norm.w")), nb_o=np.rint(g("att_norm.b") / s_b).astype(np.int64),
                ffn=[], rq_c=Rq(s_b / s("c")))
            for f in range(cfg.n_ffn):
                fp = f"ffn{f}."
                sa, sm = s(f"a{f}"), s(f"h{f}")
                L["ffn"].append(dict(
                    rq_a=Rq(s_b / sa),
                    bq_in=np.rint(g(fp + "in.b") / (sa * sc(p + fp + "in.w"))).astype(np.int64),
                    rq_in=Rq(sa * sc(p + fp + "in.w") / sm),
                    bq_out=np.rint(g(fp + "out.b") / (sm * sc(p + fp + "out.w"))).astype(np.int64),
                    rq_out=Rq(sm * sc(p + fp + "out.w") * g(fp + "norm.w") / s_b),
                    rq_res=Rq(g(fp + "norm.w")), nb=np.rint(g(fp + "norm.b") / s_b).astype(np.int64)))
            L |= dict(bq_ob=np.rint(g("out_bn.b") / (s("c") * sc(p + "out_bn.w"))).astype(np.int64),
                      rq_ob=Rq(s("c") * sc(p + "out_bn.w") * g("out_norm.w") / s_x),
                      rq_ob_res=Rq(g("out_norm.w")), nb_ob=np.rint(g("out_norm.b") / s_x).astype(np.int64))
            self.layers.append(L)

    def _mm(self, x, name):
        return self.meter.weight_kernel(name, self.w[name], x).astype(np.int64)

    def encode(self, ids: np.ndarray, types: np.ndarray, fail=lambda phase: None) -> np.ndarray:
        """ids, types: int (S,) -> this chip's hidden columns, int16 (S, x1 - x0)."""
        x = self.embed(ids, types, fail)
        with self.meter.section("blocks"):
            return self.blocks(x, fail)

    def embed(self, ids: np.ndarray, types: np.ndarray, fail=lambda phase: None) -> np.ndarray:
        """ids, types: int (S,) -> the embedded hidden stream, this chip's columns: int16 (S, x1 - x0)."""
        cfg, t = self.cfg, self.t
        S = len(ids)
        v0, v1 = self.sl.vocab
        # embedding: trigram of word-embedding rows, rows from the chips that own them
        e = np.zeros((S, cfg.embedding_size), np.int32)
        own = np.nonzero((ids >= v0) & (ids < v1))[0]
        if len(own):
            r = ids[own] - v0
            self.meter.rows("word_emb", len(own) * cfg.embedding_size)
            e[own] = self.Rq(self.rq_word[r][:, None])(t["word_emb"][r], 8)
        fail("embed")
        e = self.sync.sum(e, "embed").astype(np.int8)                 # int8 (S, E) at s_tri
        z = np.zeros((1, e.shape[1]), np.int8)
        tri = np.concatenate([np.concatenate([e[1:], z]), e, np.concatenate([z, e[:-1]])], axis=1)
        E = self.emb
        nx = self.sl.hidden[1] - self.sl.hidden[0]
        self.meter.rows("pos_emb", t["pos_emb"][:S].nbytes)
        self.meter.elementwise(S * (3 * cfg.embedding_size + 2 * nx))   # trigram, NoNorm
        x = (E["rq"](self._mm(tri, "emb_transform.w") + E["bq"], 32).astype(np.int64)
             + E["rq_pos"].take(slice(0, S))(t["pos_emb"][:S], 32)
             + E["rq_type"].take(types)(t["type_emb"][types], 32) + E["nb"])
        return self.K.sat16(x)                                             # int16 (S, nx)

    def blocks(self, x: np.ndarray, fail=lambda phase: None) -> np.ndarray:
        """This chip's blocks (layers l0 .. l1 - 1) over its columns x: int16 (S, x1 - x0)."""
        S, hd = x.shape[0], self.cfg.head_dim
        nx, nh = self.sl.hidden[1] - self.sl.hidden[0], (self.sl.heads[1] - self.sl.heads[0]) * hd
        ni = self.sl.ffn[1] - self.sl.ffn[0]
        for l, L in zip(range(self.l0, self.l1), self.layers):
            with self.meter.span(f"layer {l}"):
                x = self._layer(l, L, x, S, nx, nh, ni, fail)
        return x

    def _layer(self, l, L, x, S, nx, nh, ni, fail):
        B, hd = self.cfg.bottleneck, self.cfg.head_dim
        h0, h1 = self.sl.heads
        p = f"layers.{l}."
        self.meter.elementwise(S * nx)
        x8 = L["rq_x8"](x)
        part = np.concatenate([self._mm(x8, p + "bn_in.w"), self._mm(x8, p + "bn_att.w"),
                               self._mm(x8, p + "v.w")], axis=1).astype(np.int32)
        acc = self.sync.sum(part, f"{l}.bottleneck").astype(np.int64)    # (S, 3B)
        self.meter.elementwise(S * 3 * B)                           # bias, NoNorm, requantize
        lin = self.K.sat16(L["rq_in"](acc[:, :B] + L["bq_in"], 32).astype(np.int64) + L["nb_in"])
        sh = np.clip(L["rq_att"](acc[:, B:2 * B] + L["bq_att"], 32).astype(np.int64) + L["nb_att"],
                     -127, 127).astype(np.int8)
        v = L["rq_v"](acc[:, 2 * B:] + L["bq_v"])[:, h0 * hd:h1 * hd]     # int8 (S, nh)
        q = L["rq_q"](self._mm(sh, p + "q.w") + L["bq_q"])
        k = L["rq_k"](self._mm(sh, p + "k.w") + L["bq_k"])
        nhc = h1 - h0
        self.meter.elementwise(2 * S * nh)
        self.meter.attention(nhc, S, S, hd)
        self.meter.elementwise(nhc * S * S + S * nh)              # softmax, requantize
        qh, kh, vh = (a.reshape(S, nhc, hd).transpose(1, 0, 2) for a in (q, k, v))
        pr = self.K.softmax_i(self.K.int_matmul_small(qh, kh.transpose(0, 2, 1)), L["sm"].mult, L["sm"].shift)
        ctx = L["rq_ctx"](self.K.int_matmul_small(pr, vh)).transpose(1, 0, 2).reshape(S, -1)
        fail("attention")
        acc = self.sync.sum(self._mm(ctx, p + "att_out.w").astype(np.int32), f"{l}.attn").astype(np.int64)
        self.meter.elementwise(S * B)
        a = self.K.sat16(L["rq_o"](acc + L["bq_o"], 32).astype(np.int64) + L["rq_o_res"](lin, 32) + L["nb_o"])
        for f, F in enumerate(L["ffn"]):
            fp = f"{p}ffn{f}."
            self.meter.elementwise(S * B + S * ni)
            m = F["rq_in"](self._mm(F["rq_a"](a), fp + "in.w") + F["bq_in"])
            m = np.maximum(m, 0)                                   # ReLU, int8 (S, ni)
            fail("ffn")
            acc = self.sync.sum(self._mm(m, fp + "out.w").astype(np.int32), f"{l}.ffn{f}").astype(np.int64)
            self.meter.elementwise(S * B)
            a = self.K.sat16(F["rq_out"](acc + F["bq_out"], 32).astype(np.int64) + F["rq_res"](a, 32) + F["nb"])
        self.meter.elementwise(S * B + S * nx)
        acc = self._mm(L["rq_c"](a), p + "out_bn.w")
        x = self.K.sat16(L["rq_ob"](acc + L["bq_ob"], 32).astype(np.int64) + L["rq_ob_res"](x, 32) + L["nb_ob"])
        return x
