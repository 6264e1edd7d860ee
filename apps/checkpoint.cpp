// Checkpoint files (apps/checkpoint.h) on top of engine/io/safetensors (atomic writes, validated reads).
#include "apps/checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "engine/check.h"
#include "engine/io/safetensors.h"
#include "engine/nn/layers.h"
#include "models/weights.h"

namespace sslight::apps {
namespace {

constexpr const char* kFormat = "sslight-checkpoint-1";

std::string field(const io::Metadata& md, const std::string& key, const std::string& path) {
    auto it = md.find(key);
    if (it == md.end()) throw IoError(str(path, ": not an sslight checkpoint (metadata '", key, "' missing)"));
    return it->second;
}

// A metadata integer as the writer prints it (decimal digits only), in [0, max]; else IoError naming the field.
uint64_t count_field(const io::Metadata& md, const std::string& key, const std::string& path, uint64_t max) {
    const std::string v = field(md, key, path);
    const bool digits = !v.empty() && v.size() <= 20 && v.find_first_not_of("0123456789") == std::string::npos;
    errno = 0;
    const unsigned long long n = digits ? std::strtoull(v.c_str(), nullptr, 10) : 0;
    if (!digits || errno == ERANGE || n > max)
        throw IoError(str(path, ": metadata '", key, "' is '", v, "', expected an integer in [0, ", max, "]"));
    return n;
}

// The keys whose values differ between two canonical texts ("key = value" lines).
std::string differences(const std::string& mine, const std::string& theirs) {
    auto lines = [](const std::string& t) {
        std::vector<std::string> out;
        std::istringstream is(t);
        for (std::string l; std::getline(is, l);) out.push_back(l);
        return out;
    };
    const std::vector<std::string> a = lines(mine), b = lines(theirs);
    std::string out;
    for (const std::string& l : a)
        if (std::find(b.begin(), b.end(), l) == b.end()) {
            const std::string key = l.substr(0, l.find(" = "));
            std::string other = "(absent)";
            for (const std::string& m : b)
                if (m.rfind(key + " = ", 0) == 0) other = m.substr(key.size() + 3);
            out += str("\n  ", key, ": checkpoint ", other, ", this run ", l.substr(key.size() + 3));
        }
    return out;
}

}  // namespace

std::vector<std::string> list_checkpoints(const std::string& dir) {
    std::vector<std::string> names;
    if (DIR* d = opendir(dir.c_str())) {
        while (dirent* e = readdir(d)) {
            const std::string n = e->d_name;
            if (n.rfind("checkpoint_", 0) == 0 && n.size() > 12 && n.substr(n.size() - 12) == ".safetensors")
                names.push_back(n);
        }
        closedir(d);
    }
    std::sort(names.begin(), names.end());  // fixed-width iteration numbers sort in order
    for (auto& n : names) n = dir + "/" + n;
    return names;
}

std::string save_checkpoint(const std::string& dir, ssl::Method& method, optim::Optimizer& opt,
                            const PretrainConfig& cfg, const TrainPosition& pos, int keep, optim::Optimizer* probe_opt) {
    io::TensorMap tensors;
    for (auto& [k, t] : method.state_dict()) tensors["model." + k] = t;
    for (auto& [k, t] : opt.state_dict()) tensors["optim." + k] = t;
    if (probe_opt)
        for (auto& [k, t] : probe_opt->state_dict()) tensors["probe_optim." + k] = t;
    io::Metadata md;
    md["format"] = kFormat;
    md["config_hash"] = str(config_hash(cfg));
    md["config"] = canonical_text(cfg, true);
    md["model"] = cfg.method.backbone;
    md["method"] = cfg.method.method;
    md["optimizer"] = opt.type_name();
    md["iteration"] = str(pos.iteration);
    md["epoch"] = str(pos.epoch);
    md["step"] = str(pos.step);
    md["init_counter"] = str(pos.init_counter);
    char name[64];
    std::snprintf(name, sizeof(name), "/checkpoint_%09lld.safetensors", static_cast<long long>(pos.iteration));
    const std::string path = dir + name;
    io::save_safetensors(path, tensors, md);
    std::vector<std::string> all = list_checkpoints(dir);
    for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) std::remove(all[i].c_str());
    return path;
}

TrainPosition load_checkpoint(const std::string& path, ssl::Method& method, optim::Optimizer* opt,
                              const PretrainConfig& cfg, optim::Optimizer* probe_opt) {
    io::Metadata md;
    io::TensorMap tensors = io::load_safetensors(path, &md);
    if (field(md, "format", path) != kFormat)
        throw IoError(str(path, ": unknown checkpoint format '", md["format"], "' (expected ", kFormat, ")"));
    std::string diff;
    if (field(md, "model", path) != cfg.method.backbone)
        diff += str("\n  model: checkpoint ", md["model"], ", this run ", cfg.method.backbone);
    if (field(md, "method", path) != cfg.method.method)
        diff += str("\n  method: checkpoint ", md["method"], ", this run ", cfg.method.method);
    if (field(md, "config_hash", path) != str(config_hash(cfg)))
        diff += differences(canonical_text(cfg, true), field(md, "config", path));
    if (!diff.empty())
        throw ConfigError(str(path, ": the checkpoint belongs to another run; refusing to resume. Differences:", diff));
    // The position is checked before any state is copied in.
    constexpr uint64_t kMaxInt64 = uint64_t(std::numeric_limits<int64_t>::max());
    TrainPosition pos;
    pos.iteration = static_cast<int64_t>(count_field(md, "iteration", path, kMaxInt64));
    pos.epoch = static_cast<int64_t>(count_field(md, "epoch", path, uint64_t(cfg.epochs)));
    pos.step = static_cast<int64_t>(count_field(md, "step", path, kMaxInt64));
    pos.init_counter = count_field(md, "init_counter", path, std::numeric_limits<uint64_t>::max());
    // iteration = epoch * iters_per_epoch + step with step < iters_per_epoch (pretrain checks it knowing the latter).
    if (pos.epoch > pos.iteration || pos.step > pos.iteration || (pos.epoch == cfg.epochs && pos.step != 0))
        throw IoError(str(path, ": inconsistent position: iteration ", pos.iteration, ", epoch ", pos.epoch, ", step ",
                          pos.step, " (of ", cfg.epochs, " epochs)"));
    nn::StateDict model, optim_state, probe_state;
    for (auto& [k, t] : tensors) {
        if (k.rfind("model.online_probe.", 0) == 0 && !method.online_probe) continue;
        if (k.rfind("model.", 0) == 0) model[k.substr(6)] = t;
        else if (k.rfind("optim.", 0) == 0) optim_state[k.substr(6)] = t;
        else if (k.rfind("probe_optim.", 0) == 0) probe_state[k.substr(12)] = t;
        else throw IoError(str(path, ": unexpected tensor '", k, "'"));
    }
    try {  // every refusal below names the file
        method.load_state_dict(model, true);
        method.check_loaded_state();
        if (opt) opt->load_state_dict(optim_state);
        if (probe_opt) probe_opt->load_state_dict(probe_state);
    } catch (const Error& e) {
        throw IoError(str(path, ": ", e.what()));
    }
    return pos;
}

std::string export_backbone(const std::string& checkpoint, const PretrainConfig& cfg, const std::string& out) {
    nn::init_generator() = Generator(cfg.seed);
    ssl::MethodConfig mc = cfg.method;
    mc.total_epochs = cfg.epochs;
    if (std::isfinite(mc.lambda_gg)) mc.lambda_gl = 1 - mc.lambda_gg;
    std::shared_ptr<ssl::Method> method = ssl::make_method(mc);
    load_checkpoint(checkpoint, *method, nullptr, cfg);
    models::save_backbone(out, method->student_backbone());
    return out;
}

}  // namespace sslight::apps
