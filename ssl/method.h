// The interface the training app drives every self-supervised method through (SPEC.md §4): forward_loss runs
// the backbone once per resolution group of the multi-crop views and returns the scalar loss L = λ_gg·mean over
// global-global pairs + λ_gl·mean over global-local pairs (differentiable with respect to the student's
// parameters only: teachers, key encoders, codes and queues are constants); the optimizer-step hooks do the
// method's own state updates (EMA teacher / key encoder, DINO centre, queues, epoch-0 gradient dropping).
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "engine/nn/module.h"
#include "engine/optim/optimizer.h"
#include "models/backbone.h"

namespace sslight::ssl {

class OnlineProbe;

// Resolution groups, view-major rows: groups[0] = the global crops [n_global·B, S, S, 3] (g1 rows, then g2),
// groups[1] = the locals [n_local·B, s, s, 3] (absent or empty when n_local = 0).
struct Views {
    std::vector<Tensor> groups;
    int64_t batch = 0;
    int n_global = 2;
    int n_local = 0;
};

// iteration: global iteration index since the start of training (epoch·iters_per_epoch + step in epoch).
struct StepContext {
    int64_t iteration = 0, epoch = 0, iters_per_epoch = 1, total_epochs = 1;
};

// Data-parallel hooks (single process when null). all_reduce_sum sums a tensor over ranks in place: DINO's
// centre (the teacher-output sum and the row count, one [K + 1] call per step) and SwAV's Sinkhorn sums (passed
// to ssl::sinkhorn). all_gather concatenates a [B, D] tensor over ranks along dim 0: MoCo's keys before they
// enter the queue. world_size scales SwAV's global rows and the queue-length checks.
struct DistHooks {
    std::function<void(Tensor&)> all_reduce_sum;
    std::function<Tensor(const Tensor&)> all_gather;
    int world_size = 1;
};

// Defaults are SPEC.md's; 0 / negative / NaN mean "the SPEC value for this backbone family".
struct MethodConfig {
    std::string method = "dino";   // dino | swav | moco
    std::string backbone = "resnet18";
    models::BackboneOptions backbone_options;
    bool sslight = false;
    int total_epochs = 200;
    // λ's; NaN: data::loss_weights of the recipe with the views' number of locals (baseline: uniform over pairs).
    double lambda_gg = std::numeric_limits<double>::quiet_NaN();
    double lambda_gl = std::numeric_limits<double>::quiet_NaN();
    // DINO
    int64_t dino_out_dim = 0;          // 0: 4096 (CNN) / 65536 (ViT)
    int64_t dino_hidden_dim = 2048, dino_bottleneck_dim = 256;
    double student_temp = 0.1, warmup_teacher_temp = 0.04, teacher_temp = 0.07;
    int warmup_teacher_temp_epochs = -1;  // -1: 50 (CNN) / 30 (ViT); clamped to total_epochs
    double momentum_teacher = 0.996;      // cosine to 1 over all iterations
    double center_momentum = 0.9;
    int freeze_last_layer_epochs = 1;
    // SwAV
    int64_t swav_prototypes = 3000, swav_hidden_dim = 4096, swav_out_dim = 128;
    double sinkhorn_eps = 0.05, swav_temp = 0.1;
    int sinkhorn_iters = 3;
    int64_t swav_queue_length = 3840;     // rounded down to a multiple of the global batch; 0: no queue
    int swav_queue_start_epoch = 15;
    int freeze_prototypes_epochs = 1;
    // MoCo-v2
    int64_t moco_hidden_dim = 2048, moco_dim = 128, moco_queue = 65536;
    double moco_temp = 0.2, moco_momentum = 0.999;
};

class Method : public nn::Module {
public:
    using nn::Module::Module;

    // Runs the forward passes and returns the scalar loss (the student's dtype, on its device).
    virtual Tensor forward_loss(const Views& views, const StepContext& ctx) = 0;
    // Between backward and the optimizer step: drops gradients that are frozen this epoch.
    virtual void before_optimizer_step(const StepContext&) {}
    // After the optimizer step: EMA teachers, centres, queues.
    virtual void after_optimizer_step(const StepContext& ctx) = 0;
    // SPEC.md §5 groups (optim::ssl_param_groups) over the trainable (student) parameters only.
    virtual std::vector<optim::ParamGroup> param_groups(double lr, double weight_decay) = 0;
    virtual models::Backbone& student_backbone() = 0;
    // After a checkpoint's state was loaded: a value no step could have produced (MoCo's queue pointer outside
    // the queue) throws Error naming it, before the first step would trip over it.
    virtual void check_loaded_state() const {}

    // The optional online linear probe (ssl/online_probe.h), registered as the child "online_probe": call before
    // the method is moved to its device and before data parallel and the optimizer are built. forward_loss leaves
    // the detached pooled student-backbone features of the global views it ran in probe_features ([n·B, D],
    // view-major: DINO and SwAV both globals, MoCo the query view g2).
    void enable_online_probe(int64_t classes);
    std::shared_ptr<OnlineProbe> online_probe;
    Tensor probe_features;

    DistHooks dist;
};

std::shared_ptr<Method> make_method(const MethodConfig& config);

// Helpers shared by the methods (ssl/heads.cpp).
bool is_vit(const std::string& backbone);
// (λ_gg, λ_gl): the config's when set, else data::loss_weights of the method's recipe with n_local locals, and
// (1, 0) without locals.
std::pair<double, double> method_loss_weights(const MethodConfig& config, int n_local);
// Checks the views' layout (groups, batch, shapes, n_global == 2 where required) and names the method.
void check_views(const char* method, const Views& views);

}  // namespace sslight::ssl
