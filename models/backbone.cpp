// The backbone factory: one row per name. A new family (the ViTs) adds its row here; everything that builds
// a backbone (apps, SSL methods, tests, benchmarks) goes through make_backbone.
#include "models/backbone.h"

#include <functional>

#include "models/mobilenet_v2.h"
#include "models/resnet.h"
#include "models/vit.h"

namespace sslight::models {
namespace {

struct Entry {
    const char* name;
    std::function<std::shared_ptr<Backbone>(const BackboneOptions&)> make;
};

// Families without a width multiplier refuse one rather than silently building the standard width.
void fixed_width(const char* name, const BackboneOptions& o) {
    SSL_CHECK_T(ConfigError, o.width_mult == 1.0, name, ": width_mult applies to mobilenet_v2 only, got ", o.width_mult);
}

const std::vector<Entry>& table() {
    static const std::vector<Entry> entries = {
        {"mobilenet_v2", [](const BackboneOptions& o) { return std::make_shared<MobileNetV2>(o.width_mult); }},
        {"resnet18", [](const BackboneOptions& o) { fixed_width("resnet18", o); return resnet18(); }},
        {"resnet34", [](const BackboneOptions& o) { fixed_width("resnet34", o); return resnet34(); }},
        {"resnet50", [](const BackboneOptions& o) { fixed_width("resnet50", o); return resnet50(); }},
        {"vit_tiny",
         [](const BackboneOptions& o) { fixed_width("vit_tiny", o); return make_vit("vit_tiny", o.drop_path_rate); }},
        {"vit_small",
         [](const BackboneOptions& o) { fixed_width("vit_small", o); return make_vit("vit_small", o.drop_path_rate); }},
    };
    return entries;
}

}  // namespace

std::vector<std::string> backbone_names() {
    std::vector<std::string> out;
    for (const Entry& e : table()) out.emplace_back(e.name);
    return out;
}

std::shared_ptr<Backbone> make_backbone(const std::string& name, const BackboneOptions& options) {
    for (const Entry& e : table())
        if (name == e.name) return e.make(options);
    std::string known;
    for (const Entry& e : table()) known += std::string(known.empty() ? "" : ", ") + e.name;
    throw ConfigError(str("unknown backbone '", name, "'; expected one of: ", known));
}

}  // namespace sslight::models
