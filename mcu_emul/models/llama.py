"""TinyLlama (llama2.c) decode on one chip's shard, in integer arithmetic.

Chip c owns KV heads [h0, h1) (query heads rep*h0 .. rep*h1), FFN units [f0, f1) and vocab rows
[v0, v1). Per block it produces int32 partial sums of W_o att and W_2 a; `sync.sum` adds them
over chips (the block's two synchronizations). Int32 partial sums make any chip count
bit-identical to one chip: requantization happens only after the sum. A pipeline stage
(pipeline.py) owns every head and unit of a range of layers, and the embedding or not.

Numerics per token (scales from calibration, s_res one int16 scale for the residual stream):
  x int16 (dim) -> RMSNorm -> int8 -> Q/K/V int32 -> requant int8 -> RoPE (Q14) -> int8 KV cache
  -> scores int32 -> integer softmax -> uint16 Q15 probs -> P V -> requant int8 -> W_o partial
  -> sum -> requant to s_res, saturating add; FFN: RMSNorm -> W1, W3 -> int8 -> SiLU LUT (int16)
  * u -> int8 -> W2 partial -> sum -> add; final RMSNorm -> tied classifier -> int16 logits.
"""
from __future__ import annotations

import numpy as np

from ..numerics import kernels as K
from ..config import LlamaConfig
from .layout import Spec, matrix, vector
from .partition import ChipSlice
from ..numerics.quant import ScaleMap, scale_for

LOG2E = 1.4426950408889634


def specs(cfg: LlamaConfig, sl: ChipSlice, kv_len: int, layers: tuple | None = None,
          embedding: bool = True) -> list[Spec]:
    """Every buffer chip `sl` holds, in placement priority order (embedding last): slices of
    the blocks `layers` (default all) and, with `embedding`, the final norm and classifier."""
    l0, l1 = layers or (0, cfg.n_layers)
    D, hd, V = cfg.dim, cfg.head_dim, cfg.vocab_size
    rep = cfg.n_heads // cfg.n_kv_heads
    h0, h1 = sl.heads
    q_rows = (h0 * rep * hd, h1 * rep * hd)
    kv_rows = (h0 * hd, h1 * hd)
    f = sl.ffn
    nq, nkv, nf, nv = q_rows[1] - q_rows[0], kv_rows[1] - kv_rows[0], f[1] - f[0], sl.vocab[1] - sl.vocab[0]
    out = [Spec("kv_cache", "kv_cache", (2, l1 - l0, kv_len, nkv), "int8"),
           # x, xn, partial sums, q/k/v, scores + probs, att, g/u/a + acc, logits + acc
           Spec("activations", "activations",
                (2 * D + D + 4 * D + nq + 2 * nkv + 6 * (nq // hd) * kv_len + nq + 4 * nf + 4 * nf
                 + 6 * nv,), "uint8")]
    for l in range(l0, l1):
        p = f"layers.{l}."
        out += [vector(p + "attn_norm", D), vector(p + "ffn_norm", D)]
        out += matrix(p + "wq", (D, D), rows=q_rows) + matrix(p + "wk", (cfg.n_kv_heads * hd, D), rows=kv_rows)
        out += matrix(p + "wv", (cfg.n_kv_heads * hd, D), rows=kv_rows) + matrix(p + "wo", (D, D), cols=q_rows)
        out += matrix(p + "w1", (cfg.ffn_hidden, D), rows=f) + matrix(p + "w3", (cfg.ffn_hidden, D), rows=f)
        out += matrix(p + "w2", (D, cfg.ffn_hidden), cols=f)
    if not embedding:
        return out
    out += [vector("final_norm", D)] + matrix("tok_embedding", (V, D), rows=sl.vocab)
    if not cfg.tie_embeddings:
        out += matrix("lm_head", (V, D), rows=sl.vocab)
    return out


def work_class(cfg: LlamaConfig, sl: ChipSlice) -> tuple:
    """What a chip's charged work depends on besides its placement: the sizes of its slices."""
    return (sl.heads[1] - sl.heads[0], sl.ffn[1] - sl.ffn[0], sl.vocab[1] - sl.vocab[0])


def input_fetches(cfg: LlamaConfig, sl: ChipSlice, inputs) -> dict:
    """Work that depends on the prompt ids: none (which chip owns an id changes values, not
    work: every chip is charged the row fetch)."""
    return {}


class LlamaChip:
    """One chip's integer decoder. t: key -> array (from specs); sync: .sum / .max collectives."""

    def __init__(self, cfg: LlamaConfig, sl: ChipSlice, t: dict, amax: dict, sync, meter,
                 kv_len: int, payload: str = "int32", layers: tuple | None = None, embedding: bool = True):
        """layers: the blocks this chip runs (default all); embedding: it holds the embedding,
        final norm and classifier (a pipeline stage may hold neither)."""
        self.cfg, self.sl, self.sync, self.meter, self.payload = cfg, sl, sync, meter, payload
        self.l0, self.l1 = layers or (0, cfg.n_layers)
        # the meter's kernels: the real ones, or shape-only stand-ins in a dry run
        self.K, self.Rq = meter.K, meter.Rq
        Rq = self.Rq
        hd = cfg.head_dim
        self.rep = cfg.n_heads // cfg.n_kv_heads
        self.nkv = sl.heads[1] - sl.heads[0]
        S = ScaleMap(amax)
        self.s_res = s_res = scale_for(amax["res"], 16)
        self.eps_int = max(1, round(cfg.norm_eps / s_res ** 2))
        self.w = {k: self.K.QWeight(v) for k, v in t.items() if v.dtype == np.int8 and v.ndim == 2}
        # weights that share an input are computed in one product (host side; each is charged
        # on its own): Q, K, V of a block, and its W1, W3
        self.stacks = {}
        for l in range(self.l0, self.l1):
            p = f"layers.{l}."
            for name, parts in (("qkv", ("wq", "wk", "wv")), ("w13", ("w1", "w3"))):
                keys = tuple(p + k for k in parts)
                self.stacks[p + name] = (keys, self.K.stack([self.w[k] for k in keys]))
        self.kv = t["kv_cache"]                                       # int8 (2, l1 - l0, T, nkv*hd)
        self.cos, self.sin = K.rope_tables(hd, kv_len, cfg.rope_theta)
        self.layers = []
        for l in range(self.l0, self.l1):
            p = f"layers.{l}."
            sq, sk, sv, sa = S[f"{l}.q"], S[f"{l}.k"], S[f"{l}.v"], S[f"{l}.att"]
            sxa, sxf = S[f"{l}.xn_att"], S[f"{l}.xn_ffn"]
            sg, su, sa2 = S[f"{l}.g"], S[f"{l}.u"], S[f"{l}.a"]
            s_silu = scale_for(amax[f"{l}.silu"], 16)
            L = dict(
                g_att=K.rmsnorm_gain(t[p + "attn_norm"], sxa), g_ffn=K.rmsnorm_gain(t[p + "ffn_norm"], sxf),
                rq_q=Rq(sxa * t[p + "wq.scale"].astype(np.float64) / sq),
                rq_k=Rq(sxa * t[p + "wk.scale"].astype(np.float64) / sk),
                rq_v=Rq(sxa * t[p + "wv.scale"].astype(np.float64) / sv),
                sm=Rq(sq * sk / np.sqrt(hd) * LOG2E * 256),
                rq_att=Rq(sv / K.SOFTMAX_ONE / sa),
                rq_o=Rq(sa * t[p + "wo.scale"].astype(np.float64) / s_res),
                rq_g=Rq(sxf * t[p + "w1.scale"].astype(np.float64) / sg),
                rq_u=Rq(sxf * t[p + "w3.scale"].astype(np.float64) / su),
                silu=K.silu_lut(sg, s_silu), rq_a=Rq(s_silu * su / sa2),
                rq_d=Rq(sa2 * t[p + "w2.scale"].astype(np.float64) / s_res))
            L["rq_qkv"] = Rq.stack([L["rq_q"], L["rq_k"], L["rq_v"]])
            L["rq_w13"] = Rq.stack([L["rq_g"], L["rq_u"]])
            if payload == "int8":
                so, sd = S[f"{l}.o"], S[f"{l}.d"]
                L |= dict(rq_o=Rq(sa * t[p + "wo.scale"].astype(np.float64) / so), rq_o2=Rq(so / s_res),
                          rq_d=Rq(sa2 * t[p + "w2.scale"].astype(np.float64) / sd), rq_d2=Rq(sd / s_res))
            self.layers.append(L)
        if not embedding:
            return
        self.g_final = K.rmsnorm_gain(t["final_norm"], S["xn_final"])
        se = t["tok_embedding.scale"].astype(np.float64)
        self.rq_emb = se / s_res                                     # per-row real multipliers
        self.cls = "tok_embedding" if cfg.tie_embeddings else "lm_head"
        sc = t[self.cls + ".scale"].astype(np.float64)
        self.rq_logit = Rq(S["xn_final"] * sc / scale_for(amax["logits"], 16))
        self.emb = t["tok_embedding"]                                 # int8 (v1 - v0, dim)

    def _mm(self, x, name):
        return self.meter.weight_kernel(name, self.w[name], x)

    def _mm_stack(self, x, name):
        """The product of a stack of weights (self.stacks), each charged as its own kernel."""
        keys, w = self.stacks[name]
        return self.meter.weight_kernels(keys, w, x)

    def _reduce(self, part, rq, rq2, l, what):
        """All-reduce a block's partial sums and requantize to the residual scale.

        int32 payload: exact. int8 payload: each chip requantizes its partial to int8 at the
        calibrated scale of the full sum; hops add with int8 saturation (approximate)."""
        self.meter.elementwise(part.size, "requant + residual")
        if self.payload == "int8":
            self.meter.elementwise(part.size, "requant partials")
            return rq2(self.sync.sum(rq(part), f"{l}.{what}"), 32)   # int8 on the wire
        return rq(self.sync.sum(part, f"{l}.{what}"), 32)

    def step(self, token: int, pos: int, fail=lambda phase: None) -> np.ndarray:
        """One decode step (token at position pos); returns this chip's int16 logits slice (v1 - v0,)."""
        return self.forward([token], pos, fail)

    def prefill(self, ids, fail=lambda phase: None) -> np.ndarray:
        """The whole prompt in one pass (Deeploy's "parallel" mode): GEMMs over its rows, causal
        attention, KV cache rows 0..P-1 written; returns the logits slice of its last position.
        Every kernel is row-wise or an exact integer sum, so the cache and the logits equal the
        token-by-token path's bit for bit (tested)."""
        return self.forward(list(ids), 0, fail)

    def forward(self, ids: list, pos0: int, fail=lambda phase: None) -> np.ndarray:
        """Tokens `ids` at positions pos0.. in one pass; int16 logits (v1 - v0,) of the last one."""
        x = self.embed(ids, fail)
        with self.meter.section("blocks"):
            x = self.blocks(x, pos0, fail)
        return self.head(x)

    def embed(self, ids: list, fail=lambda phase: None) -> np.ndarray:
        """The residual stream of tokens `ids`: int16 (P, dim)."""
        cfg = self.cfg
        v0, v1 = self.sl.vocab
        P = len(ids)
        x = np.zeros((P, cfg.dim), np.int32)                          # (P, dim) residual, int16 values
        # every chip is charged the row fetch: which chip owns an id is known only at run time
        self.meter.rows("tok_embedding", P * cfg.dim)
        for i, token in enumerate(ids):
            if v0 <= token < v1:
                x[i] = self.Rq(self.rq_emb[token - v0])(self.emb[token - v0], 16)
        fail("embed")
        return self.K.sat16(self.sync.sum(x, "embed"))

    def blocks(self, x: np.ndarray, pos0: int, fail=lambda phase: None) -> np.ndarray:
        """This chip's blocks (layers l0 .. l1 - 1) over x: int16 (P, dim) at positions pos0.."""
        for l, L in zip(range(self.l0, self.l1), self.layers):
            with self.meter.span(f"layer {l}"):
                x = self._layer(l, L, x, pos0, fail)
        return x

    def head(self, x: np.ndarray) -> np.ndarray:
        """Final norm and classifier of the last row of x: int16 logits (v1 - v0,)."""
        v0, v1 = self.sl.vocab
        # only the last position's logits are needed to go on (the next token)
        self.meter.elementwise(self.cfg.dim + 2 * (v1 - v0), "final norm + logits")
        h = self.K.rmsnorm_i(x[-1], self.g_final, self.eps_int)
        return self.rq_logit(self._mm(h, self.cls), 16)              # int16 (v1 - v0,)

    def _layer(self, l, L, x, pos0, fail):
        """One block over P rows (positions pos0 .. pos0+P-1). x: int16 (P, dim)."""
        cfg, hd, rep, nkv = self.cfg, self.cfg.head_dim, self.rep, self.nkv
        p = f"layers.{l}."
        P = x.shape[0]
        nq = nkv * rep
        T = pos0 + P                                                  # keys after this pass
        self.meter.elementwise(P * cfg.dim, "rmsnorm")
        h = self.K.rmsnorm_i(x, L["g_att"], self.eps_int)              # int8 (P, dim)
        qkv = L["rq_qkv"](self._mm_stack(h, p + "qkv"))               # int8 (P, (nq + 2 nkv) hd)
        v = qkv[:, (nq + nkv) * hd:]                                  # int8 (P, nkv*hd)
        self.meter.elementwise(P * (2 * nq + 3 * nkv) * hd, "requant + rope")
        cos, sin = self.cos[pos0:T, None, :], self.sin[pos0:T, None, :]
        qk = self.K.rope_i(qkv[:, :(nq + nkv) * hd].reshape(P, nq + nkv, hd), cos, sin)   # Q and K heads at once
        q, k = qk[:, :nq], qk[:, nq:]
        c = l - self.l0                                               # this chip's cache of layer l
        self.kv[0, c, pos0:T], self.kv[1, c, pos0:T] = k.reshape(P, -1), v
        kc = self.kv[0, c, :T].reshape(T, nkv, hd).transpose(1, 2, 0)[:, None]   # (nkv, 1, hd, T)
        vc = self.kv[1, c, :T].reshape(T, nkv, hd).transpose(1, 0, 2)[:, None]   # (nkv, 1, T, hd)
        # causal: row i sees keys 0..pos0+i, (row, key) pairs computed: P*pos0 + P(P+1)/2
        pairs = P * pos0 + P * (P + 1) // 2
        self.meter.attention(nq, P, T, hd, pairs)
        self.meter.elementwise(nq * pairs + P * nq * hd, "softmax")
        qh = q.reshape(P, nkv, rep, hd).transpose(1, 2, 0, 3)         # (nkv, rep, P, hd)
        sc = self.K.int_matmul_small(qh, kc)                          # int64 (nkv, rep, P, T)
        mask = None if P == 1 else np.arange(T)[None, :] <= pos0 + np.arange(P)[:, None]   # (P, T)
        pr = self.K.softmax_i(sc, L["sm"].mult, L["sm"].shift, mask)  # uint16 Q15
        o4 = self.K.int_matmul_small(pr, vc)                          # int64 (nkv, rep, P, hd)
        att = L["rq_att"](o4.transpose(2, 0, 1, 3).reshape(P, nq * hd))   # int8 (P, nq*hd)
        fail("attention")
        o = self._reduce(self._mm(att, p + "wo"), L["rq_o"], L.get("rq_o2"), l, "attn")
        x = self.K.sat16(x.astype(np.int32) + o)
        self.meter.elementwise(P * cfg.dim, "rmsnorm")
        h = self.K.rmsnorm_i(x, L["g_ffn"], self.eps_int)
        self.meter.elementwise(P * 3 * (self.sl.ffn[1] - self.sl.ffn[0]), "silu gate")
        nf = self.sl.ffn[1] - self.sl.ffn[0]
        gu = L["rq_w13"](self._mm_stack(h, p + "w13"))                # int8 (P, 2 nf)
        g, u = gu[:, :nf], gu[:, nf:]
        a = L["rq_a"](self.K.lut8(g, L["silu"]).astype(np.int32) * u)   # int8 (P, nf)
        fail("ffn")
        d = self._reduce(self._mm(a, p + "w2"), L["rq_d"], L.get("rq_d2"), l, "ffn")
        x = self.K.sat16(x.astype(np.int32) + d)
        return x

    def argmax(self, logits: np.ndarray) -> int:
        """Global greedy token: max logit, lowest index on ties; only (value, index) travels."""
        v0 = self.sl.vocab[0]
        i = int(np.argmax(logits)) if len(logits) else 0
        val = int(logits[i]) if len(logits) else -(1 << 15)
        key = np.array([((val + (1 << 15)) << 32) | ((1 << 32) - 1 - (v0 + i))], np.int64)
        best = int(self.sync.max(key, "argmax")[0])
        return (1 << 32) - 1 - (best & ((1 << 32) - 1))
