// The C ABI between balance-dist and c10d (the collectives of the libtorch that tch links).
//
// Every function catches every C++ exception and returns it as a heap string through `err` (freed with
// bd_free_string); a non-null group or 0 means success. Tensors are tch's `at::Tensor*` handles.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifdef BALANCE_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

struct Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> gloo;
#ifdef BALANCE_WITH_NCCL
  c10::intrusive_ptr<c10d::Backend> nccl;
#endif
  int rank;
  int world;
};

char* copy_message(const std::string& what) {
  char* out = static_cast<char*>(std::malloc(what.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, what.c_str(), what.size() + 1);
  }
  return out;
}

template <typename F>
int guarded(char** err, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    *err = copy_message(e.what());
  } catch (...) {
    *err = copy_message("unknown C++ exception");
  }
  return 1;
}

c10d::Backend& backend_for(Group* g, const at::Tensor& t) {
#ifdef BALANCE_WITH_NCCL
  if (t.is_cuda()) {
    return *g->nccl;
  }
#else
  (void)t;
#endif
  return *g->gloo;
}

void wait(const c10::intrusive_ptr<c10d::Work>& work, int64_t timeout_ms) {
  if (!work->wait(std::chrono::milliseconds(timeout_ms))) {
    throw std::runtime_error("the collective did not complete within " +
                             std::to_string(timeout_ms) + " ms");
  }
}

}  // namespace

extern "C" {

void bd_free_string(char* s) { std::free(s); }

int bd_has_nccl() {
#ifdef BALANCE_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// Joins the group: the server rank (0, unless torchelastic's agent already hosts the store) hosts the
// TCPStore at host:port, every rank connects; `timeout_ms` bounds the
// rendezvous and becomes every collective's default timeout. `prefix` namespaces the store's keys (one
// store can serve several groups). `with_nccl` also creates an NCCL backend for CUDA tensors.
void* bd_group_new(const char* host, uint16_t port, int rank, int world, int is_server,
                   int64_t timeout_ms, const char* prefix, int with_nccl, char** err) {
  Group* out = nullptr;
  guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = world;
    opts.waitWorkers = true;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    auto gloo_opts = c10d::ProcessGroupGloo::Options::create(timeout);
    gloo_opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
    gloo_opts->threads = 1;
    auto group = std::make_unique<Group>();
    group->store = tcp;
    group->rank = rank;
    group->world = world;
    group->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
        c10::make_intrusive<c10d::PrefixStore>("gloo", store), rank, world, gloo_opts);
    if (with_nccl != 0) {
#ifdef BALANCE_WITH_NCCL
      auto nccl_opts = c10d::ProcessGroupNCCL::Options::create();
      nccl_opts->timeout = timeout;
      group->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          c10::make_intrusive<c10d::PrefixStore>("nccl", store), rank, world, nccl_opts);
#else
      throw std::runtime_error("this build of balance-dist has no NCCL (feature `nccl`)");
#endif
    }
    out = group.release();
  });
  return out;
}

void bd_group_free(void* group) { delete static_cast<Group*>(group); }

// op: 0 sum, 1 max, 2 min.
int bd_all_reduce(void* group, at::Tensor* tensor, int op, int64_t timeout_ms, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == 1 ? c10d::ReduceOp::MAX : op == 2 ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    std::vector<at::Tensor> tensors{*tensor};
    wait(backend_for(g, *tensor).allreduce(tensors, opts), timeout_ms);
  });
}

int bd_broadcast(void* group, at::Tensor* tensor, int root, int64_t timeout_ms, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    std::vector<at::Tensor> tensors{*tensor};
    wait(backend_for(g, *tensor).broadcast(tensors, opts), timeout_ms);
  });
}

// `outputs` holds `world` tensors shaped like `input`; rank r's input lands in outputs[r].
int bd_all_gather(void* group, at::Tensor* input, at::Tensor** outputs, int64_t timeout_ms, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::AllgatherOptions opts;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    std::vector<at::Tensor> gathered;
    for (int r = 0; r < g->world; ++r) {
      gathered.push_back(*outputs[r]);
    }
    std::vector<std::vector<at::Tensor>> out{gathered};
    std::vector<at::Tensor> in{*input};
    wait(backend_for(g, *input).allgather(out, in, opts), timeout_ms);
  });
}

int bd_barrier(void* group, int64_t timeout_ms, char** err) {
  return guarded(err, [&] {
    auto* g = static_cast<Group*>(group);
    c10d::BarrierOptions opts;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    wait(g->gloo->barrier(opts), timeout_ms);
  });
}

}  // extern "C"
