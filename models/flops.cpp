// FLOP bookkeeping per layer: conv MACs = Ho·Wo·k·k·(Cin/groups)·Cout, linear MACs = rows·in·out, matmul
// MACs = batch·m·k·n; element-wise work counted apart. Output sizes follow the conv formula
// floor((H + 2 pad - dil (k - 1) - 1) / stride) + 1 so the walk mirrors the real forward.
#include "models/flops.h"

#include <cmath>
#include <cstdio>

#include "models/backbone.h"

namespace sslight::models {
namespace {

int64_t out_size(int64_t in, int k, int stride, int pad, int dil, const std::string& name) {
    const int64_t o = (in + 2 * pad - dil * (k - 1) - 1) / stride + 1;
    SSL_CHECK_SHAPE(in + 2 * pad - dil * (k - 1) - 1 >= 0 && o >= 1, "count_flops: ", name, " gets a ", in,
                    "-pixel input, too small for kernel ", k, " stride ", stride, " padding ", pad);
    return o;
}

}  // namespace

FlopCounter::Hw FlopCounter::conv(const std::string& name, const nn::Conv2d& c, Hw in) {
    const Shape& w = c.weight.shape();  // [Cout, kh, kw, Cin/groups]
    const Conv2dArgs& a = c.args;
    const Hw o{out_size(in.h, static_cast<int>(w[1]), a.stride_h, a.pad_h, a.dil_h, name),
               out_size(in.w, static_cast<int>(w[2]), a.stride_w, a.pad_w, a.dil_w, name)};
    FlopEntry e{name, "conv", o.h * o.w * w[1] * w[2] * w[3] * w[0], 0, {o.h, o.w, w[0]}};
    if (c.bias.defined()) e.other = o.h * o.w * w[0];
    macs_ += e.macs;
    other_ += e.other;
    entries_.push_back(std::move(e));
    return o;
}

void FlopCounter::linear(const std::string& name, const nn::Linear& l, int64_t rows) {
    const int64_t out = l.weight.size(0), in = l.weight.size(1);
    FlopEntry e{name, "linear", rows * in * out, l.bias.defined() ? rows * out : 0, {rows, out}};
    macs_ += e.macs;
    other_ += e.other;
    entries_.push_back(std::move(e));
}

void FlopCounter::matmul(const std::string& name, int64_t batch, int64_t m, int64_t k, int64_t n) {
    FlopEntry e{name, "matmul", batch * m * k * n, 0, {batch, m, n}};
    macs_ += e.macs;
    entries_.push_back(std::move(e));
}

void FlopCounter::batch_norm(const std::string& name, const nn::BatchNorm& bn, Hw at) {
    const int64_t c = bn.weight.defined() ? bn.weight.numel() : bn.running_mean.numel();
    // Folded to one scale and one shift per element; a fused activation adds one op.
    const int64_t per = 2 + (bn.args.act != Activation::none ? 1 : 0);
    elementwise(name, "bn", at.h * at.w * c, per, {at.h, at.w, c});
}

void FlopCounter::elementwise(const std::string& name, const std::string& kind, int64_t elements,
                              int64_t flops_per_element, Shape out) {
    other_ += elements * flops_per_element;
    entries_.push_back(FlopEntry{name, kind, 0, elements * flops_per_element, std::move(out)});
}

FlopCounter::Hw FlopCounter::max_pool(const std::string& name, Hw in, int64_t channels, int kernel, int stride,
                                      int padding) {
    const Hw o{out_size(in.h, kernel, stride, padding, 1, name), out_size(in.w, kernel, stride, padding, 1, name)};
    // k·k - 1 comparisons per output.
    elementwise(name, "pool", o.h * o.w * channels, static_cast<int64_t>(kernel) * kernel - 1, {o.h, o.w, channels});
    return o;
}

void FlopCounter::global_avg_pool(const std::string& name, Hw in, int64_t channels) {
    other_ += in.h * in.w * channels;
    entries_.push_back(FlopEntry{name, "pool", 0, in.h * in.w * channels, {channels}});
}

FlopCounter count_flops(Backbone& m, int64_t height, int64_t width) {
    SSL_CHECK_SHAPE(height > 0 && width > 0, "count_flops: input size must be positive, got ", height, "x", width);
    FlopCounter fc;
    m.count_flops(fc, height, width);
    return fc;
}

std::string format_count(double value) {
    const char* prefixes[] = {"", "k", "M", "G", "T", "P"};
    int i = 0;
    while (std::fabs(value) >= 1000.0 && i < 5) {
        value /= 1000.0;
        ++i;
    }
    char buf[32];
    const int decimals = std::fabs(value) >= 10 ? 1 : 2;
    std::snprintf(buf, sizeof buf, "%.*f %s", decimals, value, prefixes[i]);
    return buf;
}

std::string flops_table(const FlopCounter& fc) {
    std::string out;
    char line[256];
    std::snprintf(line, sizeof line, "%-32s %-7s %-18s %12s %12s\n", "layer", "kind", "output", "MACs", "other");
    out += line;
    for (const FlopEntry& e : fc.entries()) {
        std::snprintf(line, sizeof line, "%-32s %-7s %-18s %12s %12s\n", e.name.c_str(), e.kind.c_str(),
                      shape_str(e.out).c_str(), e.macs ? format_count(static_cast<double>(e.macs)).c_str() : "-",
                      e.other ? format_count(static_cast<double>(e.other)).c_str() : "-");
        out += line;
    }
    out += str("total: ", format_count(static_cast<double>(fc.macs())), "MACs = ",
               format_count(static_cast<double>(fc.flops())), "FLOPs (2 x MACs), plus ",
               format_count(static_cast<double>(fc.other_flops())), "element-wise FLOPs\n");
    return out;
}

}  // namespace sslight::models
