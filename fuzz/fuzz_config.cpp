// libFuzzer target: the TOML subset parser (apps/toml.h) and the config loader and validator (apps/config.h) on
// arbitrary bytes. The input up to the first NUL is the config file; each further NUL-separated piece (up to 8) is
// a `--set key=value`. Every input either gives a config or throws ConfigError. An accepted config must also give
// a valid view recipe, and its canonical text (what `pretrain` writes as config.resolved.toml) must load back to
// the same config.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/pretrain.h"
#include "apps/toml.h"
#include "engine/check.h"

using namespace sslight;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string all(reinterpret_cast<const char*>(data), size);
    std::vector<std::string> pieces;
    for (size_t at = 0; pieces.size() < 9;) {
        const size_t nul = all.find('\0', at);
        pieces.push_back(all.substr(at, nul == std::string::npos ? std::string::npos : nul - at));
        if (nul == std::string::npos) break;
        at = nul + 1;
    }
    const std::string text = pieces[0];
    const std::vector<std::string> sets(pieces.begin() + 1, pieces.end());
    // The parser alone: every value it returns is one of its types, arrays hold scalars only.
    try {
        const apps::toml::Document doc = apps::toml::parse(text, "fuzz.toml");
        for (const auto& entry : doc.entries) {  // (an empty key "" is valid, if useless, TOML)
            const apps::toml::Value& v = entry.second;
            if (v.line < 1 || v.column < 1) __builtin_trap();
            for (const apps::toml::Value& e : v.array)
                if (e.type == apps::toml::Value::Type::array) __builtin_trap();
        }
    } catch (const ConfigError&) {
    }
    apps::PretrainConfig c;
    try {
        c = apps::parse_config(text, "fuzz.toml", sets);
    } catch (const ConfigError&) {
        return 0;
    }
    (void)apps::recipe_of(c);
    const std::string canon = apps::canonical_text(c);
    const apps::PretrainConfig back = apps::parse_config(canon, "fuzz.toml");
    if (apps::canonical_text(back) != canon || apps::config_hash(back) != apps::config_hash(c)) __builtin_trap();
    return 0;
}
