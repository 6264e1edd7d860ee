// Element-wise ops (CPU: f32, f64; CUDA: f32, bf16 storage with f32 math), all differentiable.
// Binary a op b accepts b of a's shape, a one-element b (broadcast everywhere) or a 1-D b of size
// a.size(-1) (broadcast over the last dim: a per-channel bias/scale in NHWC); the gradient of a broadcast b
// is the deterministic sum over the broadcast rows. Unary ops: gradient f'(x) (clamp passes where
// lo <= x <= hi, relu6 where 0 < x < 6, abs/relu take 0 at 0). add_ and mul_ update in place and record nothing.
#pragma once
#include "engine/tensor.h"

namespace sslight {

// a op b with b broadcast as above; anything else is a ShapeError naming both shapes. Same dtype (else
// DTypeError) and device (else DeviceError).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);

// With a scalar: a + s, a - s, a * s, a / s (as a * (1 / s)), s - a, s / a.
Tensor add(const Tensor& a, double s);
Tensor sub(const Tensor& a, double s);
Tensor mul(const Tensor& a, double s);
Tensor div(const Tensor& a, double s);
Tensor rsub(double s, const Tensor& a);
Tensor rdiv(double s, const Tensor& a);

// Unary.
Tensor neg(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor pow(const Tensor& a, double p);  // gradient p x^(p-1), 0 when p == 0
Tensor abs(const Tensor& a);
Tensor clamp(const Tensor& a, double lo, double hi);  // needs lo <= hi
Tensor relu(const Tensor& a);
Tensor relu6(const Tensor& a);
Tensor gelu(const Tensor& a);  // 0.5 x (1 + erf(x / sqrt(2))), the exact form
Tensor sigmoid(const Tensor& a);
Tensor tanh(const Tensor& a);

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, double s);
Tensor operator-(const Tensor& a, double s);
Tensor operator*(const Tensor& a, double s);
Tensor operator/(const Tensor& a, double s);
Tensor operator+(double s, const Tensor& a);
Tensor operator-(double s, const Tensor& a);
Tensor operator*(double s, const Tensor& a);
Tensor operator/(double s, const Tensor& a);
Tensor operator-(const Tensor& a);

// In-place updates for optimizer/EMA-style code: a += alpha * b (b of a's shape, same dtype and device) and
// a *= s. They record no autograd history and bump no version: modifying a tensor that a recorded op saved
// for its backward (an input of mul/div/log/..., an output of exp/sqrt/sigmoid/tanh) makes that backward wrong.
// Leaves (parameters, buffers) are fine; a tensor produced by a recorded op is refused (AutogradError) while
// grad mode is on.
void add_(Tensor& a, const Tensor& b, double alpha = 1.0);
void mul_(Tensor& a, double s);

}  // namespace sslight
