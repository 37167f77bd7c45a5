"""Float32 reference forwards (the accuracy yardstick; not part of the emulated chip).

`observe(site, array)` is called at every point the integer path quantizes, so the
same code calibrates activation scales.
"""
from __future__ import annotations

import numpy as np

from ..config import LlamaConfig, MobileBertConfig


def _none(site, x):
    pass


def rope_f(x: np.ndarray, pos: int, theta: float) -> np.ndarray:
    """llama2.c rotation of adjacent pairs. x: (heads, head_dim)."""
    hd = x.shape[-1]
    freq = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = pos * freq
    c, s = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    y = np.empty_like(x)
    y[..., 0::2] = x0 * c - x1 * s
    y[..., 1::2] = x0 * s + x1 * c
    return y


def rmsnorm_f(x, g, eps):
    return (x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + eps)).astype(np.float32) * g


def softmax_f(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class LlamaRef:
    """Float32 decode with a KV cache. w: dict name -> float32 array (see weights.py)."""

    def __init__(self, cfg: LlamaConfig, w: dict, max_len: int, observe=_none):
        self.cfg, self.w, self.obs = cfg, w, observe
        kvd = cfg.n_kv_heads * cfg.head_dim
        self.k = np.zeros((cfg.n_layers, max_len, kvd), np.float32)   # (L, T, kv_dim)
        self.v = np.zeros((cfg.n_layers, max_len, kvd), np.float32)

    def step(self, token: int, pos: int) -> np.ndarray:
        c, w, obs = self.cfg, self.w, self.obs
        hd, nh, nkv = c.head_dim, c.n_heads, c.n_kv_heads
        x = w["tok_embedding"][token].astype(np.float32)               # (dim,)
        obs("res", x)
        for l in range(c.n_layers):
            p = f"layers.{l}."
            h = rmsnorm_f(x, w[p + "attn_norm"], c.norm_eps)
            obs(f"{l}.xn_att", h)
            q = (w[p + "wq"] @ h).reshape(nh, hd)
            k = (w[p + "wk"] @ h).reshape(nkv, hd)
            v = w[p + "wv"] @ h
            obs(f"{l}.q", q), obs(f"{l}.k", k)
            q, k = rope_f(q, pos, c.rope_theta), rope_f(k, pos, c.rope_theta)
            obs(f"{l}.q", q), obs(f"{l}.k", k), obs(f"{l}.v", v)
            self.k[l, pos], self.v[l, pos] = k.reshape(-1), v
            kc = self.k[l, :pos + 1].reshape(pos + 1, nkv, hd)
            vc = self.v[l, :pos + 1].reshape(pos + 1, nkv, hd)
            rep = nh // nkv
            kc, vc = np.repeat(kc, rep, axis=1), np.repeat(vc, rep, axis=1)   # (T, nh, hd)
            sc = np.einsum("hd,thd->ht", q, kc) / np.sqrt(hd)
            pr = softmax_f(sc)
            att = np.einsum("ht,thd->hd", pr, vc).reshape(-1)
            obs(f"{l}.att", att)
            o = w[p + "wo"] @ att
            obs(f"{l}.o", o)
            x = x + o
            obs("res", x)
            h = rmsnorm_f(x, w[p + "ffn_norm"], c.norm_eps)
            obs(f"{l}.xn_ffn", h)
            g, u = w[p + "w1"] @ h, w[p + "w3"] @ h
            obs(f"{l}.g", g), obs(f"{l}.u", u)
            sg = g / (1.0 + np.exp(-g))
            obs(f"{l}.silu", sg)
            a = sg * u
            obs(f"{l}.a", a)
            d = w[p + "w2"] @ a
            obs(f"{l}.d", d)
            x = x + d
            obs("res", x)
        h = rmsnorm_f(x, w["final_norm"], c.norm_eps)
        obs("xn_final", h)
        logits = w["tok_embedding" if c.tie_embeddings else "lm_head"] @ h
        obs("logits", logits)
        return logits.astype(np.float32)


def mobilebert_f(cfg: MobileBertConfig, w: dict, ids: np.ndarray, types=None, observe=_none) -> np.ndarray:
    """Float32 encoder pass. ids: int (S,) -> final hidden states float32 (S, hidden)."""
    obs = observe
    S = len(ids)
    types = np.zeros(S, np.int64) if types is None else types
    e = w["word_emb"][ids]                                            # (S, E)
    z = np.zeros_like(e[:1])
    tri = np.concatenate([np.concatenate([e[1:], z]), e, np.concatenate([z, e[:-1]])], axis=1)
    obs("tri", tri)
    x = tri @ w["emb_transform.w"].T + w["emb_transform.b"]
    x = x + w["pos_emb"][:S] + w["type_emb"][types]
    x = x * w["emb_norm.w"] + w["emb_norm.b"]                          # NoNorm
    obs("x", x)
    hd = cfg.head_dim
    for l in range(cfg.n_layers):
        p = f"layers.{l}."
        obs(f"{l}.x8", x)
        lin = (x @ w[p + "bn_in.w"].T + w[p + "bn_in.b"]) * w[p + "bn_in_norm.w"] + w[p + "bn_in_norm.b"]
        obs("bneck", lin)
        sh = (x @ w[p + "bn_att.w"].T + w[p + "bn_att.b"]) * w[p + "bn_att_norm.w"] + w[p + "bn_att_norm.b"]
        obs(f"{l}.shared", sh)
        q = sh @ w[p + "q.w"].T + w[p + "q.b"]
        k = sh @ w[p + "k.w"].T + w[p + "k.b"]
        v = x @ w[p + "v.w"].T + w[p + "v.b"]
        obs(f"{l}.q", q), obs(f"{l}.k", k), obs(f"{l}.v", v)
        qh, kh, vh = (t.reshape(S, cfg.n_heads, hd).transpose(1, 0, 2) for t in (q, k, v))
        pr = softmax_f(qh @ kh.transpose(0, 2, 1) / np.sqrt(hd))
        ctx = (pr @ vh).transpose(1, 0, 2).reshape(S, -1)
        obs(f"{l}.ctx", ctx)
        a = ((ctx @ w[p + "att_out.w"].T + w[p + "att_out.b"]) + lin) * w[p + "att_norm.w"] + w[p + "att_norm.b"]
        obs("bneck", a)
        for f in range(cfg.n_ffn):
            fp = f"{p}ffn{f}."
            obs(f"{l}.a{f}", a)
            hmid = np.maximum(a @ w[fp + "in.w"].T + w[fp + "in.b"], 0)
            obs(f"{l}.h{f}", hmid)
            a = ((hmid @ w[fp + "out.w"].T + w[fp + "out.b"]) + a) * w[fp + "norm.w"] + w[fp + "norm.b"]
            obs("bneck", a)
        obs(f"{l}.c", a)
        x = ((a @ w[p + "out_bn.w"].T + w[p + "out_bn.b"]) + x) * w[p + "out_norm.w"] + w[p + "out_norm.b"]
        obs("x", x)
    return x.astype(np.float32)
