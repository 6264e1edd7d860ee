// Fused multi-head self-attention (no mask, no dropout; ViT): per (batch b, head h), with s = scale,
//   O = softmax(s Q Kᵀ) V,   lse_i = log sum_j exp(s q_i·k_j)   (flash-attention: online softmax, no T x T matrix).
// Backward recomputes P = exp(s Q Kᵀ - lse) from Q, K and lse, with Dsum_i = dO_i·O_i: dV = Pᵀ dO,
// dS = P ∘ (dO Vᵀ - Dsum), dQ = s dS K, dK = s dSᵀ Q. Gradient contract: dq, dk, dv are WRITTEN (=), never
// accumulated; a null gradient pointer is skipped. Layouts are strides, so the same kernels read [B, heads, T, D]
// tensors and the fused timm qkv [B, T, 3, heads, D] in place and write the output as [B, T, heads, D].
#pragma once
#include "kernels/common.h"

namespace sslight::kernels {

struct AttentionParams {
    int B = 0, H = 0, T = 0, D = 0;  // batch, heads, tokens, head dim
    double scale = 0;                // multiplies q·k (the op turns 0 into 1/sqrt(D))
    // Element strides of q, k, v (and of dq, dk, dv, which share their layout): element (b, h, t, d) of q is
    // q[b * in_sb + h * in_sh + t * in_st + d]; the head dim is contiguous.
    int64_t in_sb = 0, in_sh = 0, in_st = 0;
    // The same for o and dout.
    int64_t out_sb = 0, out_sh = 0, out_st = 0;
};

// q, k, v and o all [B, H, T, D] contiguous.
inline AttentionParams attention_params_bhtd(int B, int H, int T, int D, double scale) {
    AttentionParams p;
    p.B = B, p.H = H, p.T = T, p.D = D, p.scale = scale;
    p.in_sb = p.out_sb = int64_t(H) * T * D;
    p.in_sh = p.out_sh = int64_t(T) * D;
    p.in_st = p.out_st = D;
    return p;
}

// q, k, v inside qkv [B, T, 3, H, D] (q = qkv, k = qkv + H*D, v = qkv + 2*H*D); o [B, T, H, D].
inline AttentionParams attention_params_qkv(int B, int H, int T, int D, double scale) {
    AttentionParams p;
    p.B = B, p.H = H, p.T = T, p.D = D, p.scale = scale;
    p.in_sb = int64_t(T) * 3 * H * D, p.in_sh = D, p.in_st = int64_t(3) * H * D;
    p.out_sb = int64_t(T) * H * D, p.out_sh = D, p.out_st = int64_t(H) * D;
    return p;
}

// CPU implementation and reference (T = float, double): OpenMP over the B*H (batch, head) pairs, any D >= 1.
// q, k, v: (B, H, T, D) by the in strides  o: (B, H, T, D) by the out strides, written
// lse: (B, H, T) contiguous, written (log-sum-exp of each row of s Q Kᵀ, natural log).
template <class T>
void attention_fwd_cpu(const AttentionParams& p, const T* q, const T* k, const T* v, T* o, T* lse);
// o, dout: (B, H, T, D) by the out strides  lse: (B, H, T)  dq, dk, dv: (B, H, T, D) by the in strides,
// written; any of them may be null (not needed).
template <class T>
void attention_bwd_cpu(const AttentionParams& p, const T* q, const T* k, const T* v, const T* o, const T* dout,
                       const T* lse, T* dq, T* dk, T* dv);

}  // namespace sslight::kernels

// GPU launchers (T = float or bf16 storage, f32 arithmetic; plain SIMT code, no tensor cores). Requirements
// (std::invalid_argument otherwise): D <= 128 and a multiple of 8, 8-byte (bf16) or 16-byte (f32) aligned
// pointers, strides multiples of 4. Deterministic: no atomics; every output element is reduced by one thread in
// a fixed order.
SSL_GPU_DECLARE(
    // q, k, v: (B, H, T, D) by the in strides  o: by the out strides, written  lse: f32 (B, H, T), written.
    template <class T> void attention_fwd(const AttentionParams& p, const T* q, const T* k, const T* v, T* o,
                                          float* lse, Stream s);
    // Number of floats of device workspace attention_bwd needs (B * H * T: the Dsum row dots).
    size_t attention_bwd_workspace(const AttentionParams& p);
    // o, dout: by the out strides  lse: f32 (B, H, T) from attention_fwd  dq, dk, dv: by the in strides,
    // written, any may be null  workspace: attention_bwd_workspace(p) floats, overwritten. Three kernels: the
    // Dsum preprocess, one block per key tile for dk and dv (looping over all queries), one block per query
    // tile for dq (looping over all keys).
    template <class T> void attention_bwd(const AttentionParams& p, const T* q, const T* k, const T* v, const T* o,
                                          const T* dout, const float* lse, T* dq, T* dk, T* dv, float* workspace,
                                          Stream s);
)
