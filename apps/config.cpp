// The config key table and its validation (apps/config.h). One Field per key: its TOML name, type, the
// member it writes and the valid range or choices; the same table serves files, --set and canonical_text.
#include "apps/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "apps/toml.h"
#include "engine/check.h"
#include "models/backbone.h"

namespace sslight::apps {
namespace {

// f64_auto: a number in range, or nan for "the recipe's value"; pair: [lo, hi], or [] for the recipe's.
enum class Kind { i32, i64, u64, f64, f64_auto, boolean, text, pair };

struct Field {
    const char* key;
    Kind kind;
    void* ptr;
    double lo = 0, hi = 0;             // numbers: inclusive range
    std::vector<std::string> choices;  // text: allowed values (empty: any non-empty)
    bool hashed = true;                // part of the checkpoint compatibility hash
};

constexpr double kBig = 9.0e15;

Field F(const char* key, Kind kind, void* ptr, double lo = 0, double hi = 0, std::vector<std::string> choices = {},
        bool hashed = true) {
    return Field{key, kind, ptr, lo, hi, std::move(choices), hashed};
}

std::vector<Field> fields(PretrainConfig& c) {
    ssl::MethodConfig& m = c.method;
    std::vector<std::string> backbones = models::backbone_names();
    return {
        F("run.name", Kind::text, &c.name, 0, 0, {}, false),
        F("run.seed", Kind::u64, &c.seed, 0, kBig),
        F("run.epochs", Kind::i32, &c.epochs, 1, 100000),
        F("run.batch_size", Kind::i32, &c.batch_size, 2, 1 << 20),
        F("run.log_every", Kind::i32, &c.log_every, 1, 1 << 30, {}, false),
        F("run.device", Kind::text, &c.device, 0, 0, {}, false),
        F("model.backbone", Kind::text, &m.backbone, 0, 0, backbones),
        F("model.width_mult", Kind::f64, &m.backbone_options.width_mult, 0.05, 4),
        F("model.drop_path_rate", Kind::f64, &m.backbone_options.drop_path_rate, 0, 0.9),
        F("method.name", Kind::text, &m.method, 0, 0, {"dino", "swav", "moco"}),
        F("method.sslight", Kind::boolean, &m.sslight),
        F("method.lambda_gg", Kind::f64_auto, &m.lambda_gg, 0, 1),
        F("method.dino_out_dim", Kind::i64, &m.dino_out_dim, 0, 1 << 20),
        F("method.dino_hidden_dim", Kind::i64, &m.dino_hidden_dim, 1, 1 << 16),
        F("method.dino_bottleneck_dim", Kind::i64, &m.dino_bottleneck_dim, 1, 1 << 16),
        F("method.student_temp", Kind::f64, &m.student_temp, 1e-4, 10),
        F("method.warmup_teacher_temp", Kind::f64, &m.warmup_teacher_temp, 1e-4, 10),
        F("method.teacher_temp", Kind::f64, &m.teacher_temp, 1e-4, 10),
        F("method.warmup_teacher_temp_epochs", Kind::i32, &m.warmup_teacher_temp_epochs, -1, 100000),
        F("method.momentum_teacher", Kind::f64, &m.momentum_teacher, 0, 1),
        F("method.center_momentum", Kind::f64, &m.center_momentum, 0, 1),
        F("method.freeze_last_layer_epochs", Kind::i32, &m.freeze_last_layer_epochs, 0, 100000),
        F("method.swav_prototypes", Kind::i64, &m.swav_prototypes, 1, 1 << 20),
        F("method.swav_hidden_dim", Kind::i64, &m.swav_hidden_dim, 1, 1 << 16),
        F("method.swav_out_dim", Kind::i64, &m.swav_out_dim, 1, 1 << 16),
        F("method.sinkhorn_eps", Kind::f64, &m.sinkhorn_eps, 1e-6, 10),
        F("method.sinkhorn_iters", Kind::i32, &m.sinkhorn_iters, 1, 1000),
        F("method.swav_temp", Kind::f64, &m.swav_temp, 1e-4, 10),
        F("method.swav_queue_length", Kind::i64, &m.swav_queue_length, 0, 1 << 24),
        F("method.swav_queue_start_epoch", Kind::i32, &m.swav_queue_start_epoch, 0, 100000),
        F("method.freeze_prototypes_epochs", Kind::i32, &m.freeze_prototypes_epochs, 0, 100000),
        F("method.moco_hidden_dim", Kind::i64, &m.moco_hidden_dim, 1, 1 << 16),
        F("method.moco_dim", Kind::i64, &m.moco_dim, 1, 1 << 16),
        F("method.moco_queue", Kind::i64, &m.moco_queue, 1, 1 << 24),
        F("method.moco_temp", Kind::f64, &m.moco_temp, 1e-4, 10),
        F("method.moco_momentum", Kind::f64, &m.moco_momentum, 0, 1),
        F("data.dataset", Kind::text, &c.dataset, 0, 0, {}, false),
        F("data.global_size", Kind::i32, &c.global_size, 0, 4096),
        F("data.local_size", Kind::i32, &c.local_size, 0, 4096),
        F("data.n_local", Kind::i32, &c.n_local, -1, 64),
        F("data.global_scale", Kind::pair, &c.global_scale, 1e-6, 1),
        F("data.local_scale", Kind::pair, &c.local_scale, 1e-6, 1),
        F("data.flip_p", Kind::f64_auto, &c.flip_p, 0, 1),
        F("data.num_threads", Kind::i32, &c.num_threads, 0, 1024, {}, false),
        F("data.max_train_samples", Kind::i64, &c.max_train_samples, 0, kBig),
        F("optim.optimizer", Kind::text, &c.optimizer, 0, 0, {"lars", "adamw", "sgd"}),
        F("optim.base_lr", Kind::f64, &c.base_lr, 0, 100),
        F("optim.final_lr", Kind::f64, &c.final_lr, 0, 100),
        F("optim.warmup_epochs", Kind::i32, &c.warmup_epochs, 0, 100000),
        F("optim.start_warmup_lr", Kind::f64, &c.start_warmup_lr, 0, 100),
        F("optim.weight_decay", Kind::f64, &c.weight_decay, 0, 10),
        F("optim.weight_decay_end", Kind::f64, &c.weight_decay_end, 0, 10),
        F("optim.clip_grad", Kind::f64, &c.clip_grad, 0, 1e6),
        F("train.max_steps", Kind::i64, &c.max_steps, 0, kBig, {}, false),
        F("checkpoint.every_steps", Kind::i64, &c.checkpoint_every, 0, kBig, {}, false),
        F("checkpoint.keep", Kind::i32, &c.checkpoint_keep, 1, 1000, {}, false),
        F("eval.knn_k", Kind::i32, &c.knn_k, 1, 10000, {}, false),
        F("eval.knn_temperature", Kind::f64, &c.knn_temperature, 1e-6, 100, {}, false),
        F("eval.knn_at_end", Kind::boolean, &c.knn_at_end, 0, 0, {}, false),
        F("eval.online_probe", Kind::boolean, &c.online_probe),  // hashed: the checkpoint holds the probe
        F("eval.online_probe_lr", Kind::f64, &c.online_probe_lr, 0, 100, {}, false),
    };
}

std::string expected(const Field& f) {
    auto range = [&](const char* what) { return str(what, " in [", f.lo, ", ", f.hi, "]"); };
    switch (f.kind) {
        case Kind::i32:
        case Kind::i64:
        case Kind::u64: return range("an integer");
        case Kind::f64: return range("a number");
        case Kind::f64_auto: return range("a number") + " or nan (the recipe's)";
        case Kind::boolean: return "a boolean (true or false)";
        case Kind::pair: return range("[] (the recipe's) or an array of two numbers [lo, hi], lo <= hi, each");
        case Kind::text: {
            if (f.choices.empty()) return "a string";
            std::string s = "one of";
            for (const auto& ch : f.choices) s += " \"" + ch + "\"";
            return s;
        }
    }
    return "?";
}

bool as_number(const toml::Value& v, bool integer_only, double& out) {
    if (v.type == toml::Value::Type::integer) return out = static_cast<double>(v.integer), true;
    if (v.type == toml::Value::Type::floating && !integer_only) return out = v.floating, true;
    return false;
}

// Writes `v` into the field or throws naming `where` (file:line:col or "--set"), the key and the expectation.
void assign(const Field& f, const toml::Value& v, const std::string& where) {
    auto bad = [&](const std::string& got) {
        throw ConfigError(str(where, ": key '", f.key, "' expects ", expected(f), ", got ", got));
    };
    auto got_of = [&](const toml::Value& x) -> std::string {
        if (x.type == toml::Value::Type::string) return "the string \"" + x.str + "\"";
        if (x.type == toml::Value::Type::integer) return str(x.integer);
        if (x.type == toml::Value::Type::floating) return str(x.floating);
        if (x.type == toml::Value::Type::boolean) return x.boolean ? "true" : "false";
        return str("an array of ", x.array.size());
    };
    double d = 0;
    switch (f.kind) {
        case Kind::i32:
        case Kind::i64:
        case Kind::u64:
            if (!as_number(v, true, d) || d < f.lo || d > f.hi) bad(got_of(v));
            if (f.kind == Kind::i32)
                *static_cast<int*>(f.ptr) = static_cast<int>(v.integer);
            else if (f.kind == Kind::i64)
                *static_cast<int64_t*>(f.ptr) = v.integer;
            else
                *static_cast<uint64_t*>(f.ptr) = static_cast<uint64_t>(v.integer);
            return;
        case Kind::f64:
        case Kind::f64_auto:
            if (!as_number(v, false, d) || !((d >= f.lo && d <= f.hi) || (f.kind == Kind::f64_auto && std::isnan(d))))
                bad(got_of(v));
            *static_cast<double*>(f.ptr) = std::isnan(d) ? d : d + 0.0;  // -0 -> +0: one canonical zero
            return;
        case Kind::boolean:
            if (v.type != toml::Value::Type::boolean) bad(got_of(v));
            *static_cast<bool*>(f.ptr) = v.boolean;
            return;
        case Kind::text: {
            if (v.type != toml::Value::Type::string) bad(got_of(v));
            bool ok = f.choices.empty();
            for (const auto& ch : f.choices) ok = ok || ch == v.str;
            if (!ok) bad(got_of(v));
            *static_cast<std::string*>(f.ptr) = v.str;
            return;
        }
        case Kind::pair: {
            if (v.type == toml::Value::Type::array && v.array.empty()) {
                static_cast<std::vector<double>*>(f.ptr)->clear();
                return;
            }
            if (v.type != toml::Value::Type::array || v.array.size() != 2) bad(got_of(v));
            double a = 0, b = 0;
            if (!as_number(v.array[0], false, a) || !as_number(v.array[1], false, b) || !(a >= f.lo && b <= f.hi) ||
                !(a <= b))
                bad(str("[", got_of(v.array[0]), ", ", got_of(v.array[1]), "]"));
            *static_cast<std::vector<double>*>(f.ptr) = {a, b};
            return;
        }
    }
}

const Field& find_field(const std::vector<Field>& fs, const std::string& key, const std::string& where) {
    for (const Field& f : fs)
        if (key == f.key) return f;
    std::string near;
    const std::string section = key.substr(0, key.find('.') + 1);
    for (const Field& f : fs)
        if (!section.empty() && std::string(f.key).rfind(section, 0) == 0) near += std::string(" ") + f.key;
    throw ConfigError(str(where, ": unknown key '", key, "'",
                          near.empty() ? " (known sections: run, model, method, data, optim, train, checkpoint, eval)"
                                       : " (known keys of this section:" + near + ")"));
}

void apply_set(std::vector<Field>& fs, const std::string& set) {
    const size_t eq = set.find('=');
    if (eq == std::string::npos || eq == 0) throw ConfigError(str("--set '", set, "': expected key=value"));
    const std::string key = set.substr(0, eq), text = set.substr(eq + 1);
    const std::string where = "--set " + key;
    const Field& f = find_field(fs, key, where);
    toml::Value v;
    try {
        v = toml::parse_value(text, where);
    } catch (const ConfigError&) {
        if (f.kind != Kind::text)
            throw ConfigError(str(where, ": key '", key, "' expects ", expected(f), ", got '", text, "'"));
        // A bare word for a string key, under the rule of TOML strings: no control character but tab.
        for (char ch : text)
            if ((static_cast<unsigned char>(ch) < 0x20 && ch != '\t') || ch == 0x7f)
                throw ConfigError(str(where, ": key '", key, "' expects a string without control characters"));
        v.type = toml::Value::Type::string, v.str = text;
    }
    assign(f, v, where);
}

// A TOML basic string that parses back to `s` (apps/toml.h escapes).
std::string quoted(const std::string& s) {
    std::string out = "\"";
    for (char ch : s) {
        switch (ch) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            case '\r': out += "\\r"; break;
            default: out += ch;
        }
    }
    return out + "\"";
}

}  // namespace

PretrainConfig parse_config(const std::string& text, const std::string& source_name,
                            const std::vector<std::string>& sets) {
    PretrainConfig c;
    std::vector<Field> fs = fields(c);
    const toml::Document doc = toml::parse(text, source_name);
    for (const auto& [key, v] : doc.entries) {
        const std::string where = str(source_name, ":", v.line, ":", v.column);
        assign(find_field(fs, key, where), v, where);
    }
    for (const std::string& s : sets) apply_set(fs, s);
    if (c.name.empty()) {
        std::string stem = source_name.substr(source_name.find_last_of('/') + 1);
        c.name = stem.substr(0, stem.rfind(".toml") == std::string::npos ? stem.size() : stem.rfind(".toml"));
    }
    validate(c, source_name);
    return c;
}

PretrainConfig load_config(const std::string& path, const std::vector<std::string>& sets) {
    return parse_config(toml::read_file(path), path, sets);
}

void validate(const PretrainConfig& c, const std::string& src) {
    auto need = [&](bool ok, const std::string& what) {
        if (!ok) throw ConfigError(str(src, ": ", what));
    };
    need(c.final_lr <= c.base_lr,
         str("optim.final_lr (", c.final_lr, ") must not exceed optim.base_lr (", c.base_lr, ")"));
    need(c.warmup_epochs <= c.epochs,
         str("optim.warmup_epochs (", c.warmup_epochs, ") must not exceed run.epochs (", c.epochs, ")"));
    need(
        c.method.method != "moco" || c.method.moco_queue % c.batch_size == 0,
        str("method.moco_queue (", c.method.moco_queue, ") must be a multiple of run.batch_size (", c.batch_size, ")"));
    need(c.global_size == 0 || c.local_size == 0 || c.local_size <= c.global_size,
         str("data.local_size (", c.local_size, ") must not exceed data.global_size (", c.global_size, ")"));
    need(c.device == "auto" || c.device == "cpu" || c.device.rfind("cuda", 0) == 0,
         str("run.device expects \"auto\", \"cpu\", \"cuda\" or \"cuda:N\", got \"", c.device, "\""));
    need(!c.dataset.empty(), "data.dataset expects \"embedded\" or a folder, got an empty string");
}

std::string canonical_text(const PretrainConfig& c, bool hashed_only) {
    PretrainConfig copy = c;
    std::vector<std::string> lines;
    for (const Field& f : fields(copy)) {
        if (hashed_only && !f.hashed) continue;
        std::ostringstream os;
        os.precision(17);
        os << f.key << " = ";
        switch (f.kind) {
            case Kind::i32: os << *static_cast<int*>(f.ptr); break;
            case Kind::i64: os << *static_cast<int64_t*>(f.ptr); break;
            case Kind::u64: os << *static_cast<uint64_t*>(f.ptr); break;
            case Kind::f64:
            case Kind::f64_auto: os << *static_cast<double*>(f.ptr); break;
            case Kind::boolean: os << (*static_cast<bool*>(f.ptr) ? "true" : "false"); break;
            case Kind::text: os << quoted(*static_cast<std::string*>(f.ptr)); break;
            case Kind::pair: {
                const auto& v = *static_cast<std::vector<double>*>(f.ptr);
                os << "[" << (v.empty() ? "" : str(v[0], ", ", v[1])) << "]";
                break;
            }
        }
        lines.push_back(os.str());
    }
    std::sort(lines.begin(), lines.end());
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
}

std::string canonical_text(const PretrainConfig& c) {
    return canonical_text(c, false);
}

uint64_t config_hash(const PretrainConfig& c) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char ch : canonical_text(c, true)) h = (h ^ ch) * 1099511628211ull;
    return h;
}

std::vector<std::string> config_keys() {
    PretrainConfig c;
    std::vector<std::string> out;
    for (const Field& f : fields(c)) out.push_back(f.key);
    return out;
}

const char* builtin_demo_config() {
    return "# The embedded demo (the README's first command): DINO on a ResNet18 at 32/16-px crops of the embedded\n"
           "# handwritten digits, sized to finish in a few minutes on 2 CPU cores (measured: 124 steps + kNN took 604 "
           "s\n"
           "# on a heavily shared 2-core machine, so 100 steps), then kNN vs the same backbone at random init.\n"
           "[run]\n"
           "name = \"demo\"\n"
           "seed = 0\n"
           "epochs = 2\n"
           "batch_size = 64\n"
           "log_every = 5\n"
           "[model]\n"
           "backbone = \"resnet18\"\n"
           "[method]\n"
           "name = \"dino\"\n"
           "sslight = true\n"
           "dino_out_dim = 512\n"
           "dino_hidden_dim = 512\n"
           "dino_bottleneck_dim = 128\n"
           "warmup_teacher_temp_epochs = 1\n"
           "[data]\n"
           "dataset = \"embedded\"\n"
           "global_size = 32\n"
           "local_size = 16\n"
           "n_local = 2\n"
           "max_train_samples = 3200  # 50 steps per epoch; the kNN bank still uses all 4000 train digits\n"
           "[optim]\n"
           "optimizer = \"lars\"\n"
           "base_lr = 0.48\n"
           "final_lr = 0.0048\n"
           "warmup_epochs = 1\n"
           "weight_decay = 1e-6\n"
           "weight_decay_end = 1e-6\n"
           "[checkpoint]\n"
           "every_steps = 50\n"
           "keep = 2\n"
           "[eval]\n"
           "knn_k = 20\n"
           "knn_temperature = 0.07\n"
           "online_probe = true  # a linear classifier on the detached student features: \"probe\" in the progress line\n";
}

}  // namespace sslight::apps
