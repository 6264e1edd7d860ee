// Counter-based randomness for the whole engine (DESIGN.md §2, determinism): a key (seed, stream) names a
// Philox4x32-10 sequence (kernels/philox.h) whose element i depends only on (key, i), so values are the same
// whatever the thread count or device. Generator hands out successive keys from a (seed, counter) pair that
// a checkpoint saves; derive() hashes ids such as (epoch, sample, view, rank) into a key. In-place
// initialisers (torch.nn.init semantics) write CPU (f32, f64, bf16) or CUDA (f32, bf16) tensors and record
// no gradient; rand/randn are factories.
#pragma once
#include <cstdint>
#include <initializer_list>

#include "engine/tensor.h"

namespace sslight {

struct RngKey {
    uint64_t seed = 0;    // Philox key
    uint64_t stream = 0;  // upper counter words: independent sequences under one seed
    bool operator==(const RngKey& o) const { return seed == o.seed && stream == o.stream; }
    bool operator!=(const RngKey& o) const { return !(*this == o); }
};

// SplitMix64 finaliser (Steele et al. 2014): a bijective 64-bit mix.
uint64_t splitmix64(uint64_t x);

// Hands out keys {seed, counter++}; a non-zero stream_tag keys an independent family
// {splitmix-hash(seed, tag), counter++}. The whole state is (seed, counter).
class Generator {
public:
    explicit Generator(uint64_t seed = 0) : seed_(seed) {}
    RngKey next(uint64_t stream_tag = 0);
    uint64_t seed() const { return seed_; }
    uint64_t counter() const { return counter_; }
    void set_counter(uint64_t c) { counter_ = c; }

private:
    uint64_t seed_ = 0;
    uint64_t counter_ = 0;
};

// Key {seed, h} with h a SplitMix64 chain over the ids (order and count matter), e.g.
// derive(seed, {epoch, sample, view, rank}).
RngKey derive(uint64_t seed, std::initializer_list<uint64_t> ids);

// In-place initialisers (no autograd; the tensor must be a leaf). Errors name the op and the tensor.
void uniform_(Tensor& t, double lo, double hi, RngKey key);                   // U[lo, hi)
void normal_(Tensor& t, double mean, double std, RngKey key);                 // N(mean, std^2)
// N(mean, std^2) restricted to [a, b] (absolute bounds, a < b) by the inverse CDF: torch's trunc_normal_.
void trunc_normal_(Tensor& t, double mean, double std, double a, double b, RngKey key);
void constant_(Tensor& t, double v);
// N(0, (gain / sqrt(fan))^2); the caller picks fan (fan_in or fan_out).
constexpr double kSqrt2 = 1.4142135623730951;
void kaiming_normal_(Tensor& t, int64_t fan, RngKey key, double gain = kSqrt2);

// Factories: U[0, 1) and N(0, 1).
Tensor rand(const Shape& shape, RngKey key, DType dtype = DType::f32, Device device = Device::cpu());
Tensor randn(const Shape& shape, RngKey key, DType dtype = DType::f32, Device device = Device::cpu());

}  // namespace sslight
