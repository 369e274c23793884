// The C ABI between balance-dist and c10d (the collectives of the libtorch that tch links).
//
// Every function catches every C++ exception and returns it as a heap string through `err` (freed with
// bd_free_string); a non-null group or 0 means success. Tensors are tch's `at::Tensor*` handles.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifdef BALANCE_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace {

// The message of `e` without the C++ backtrace that c10 errors append.
std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
    return c10_error->what_without_backtrace();
  }
  return e.what();
}


// Every rank bumps its counter `<prefix>/heartbeat/rank<r>` in the store every kHeartbeatMs from a
// thread of its own (a second store connection). When a collective fails, the survivor reads the
// counters twice, kProbeMs apart: a rank whose counter did not move is gone (or never joined), which
// names it in the error; Gloo's own message only names the peer's address.
constexpr int kHeartbeatMs = 250;
constexpr int kProbeMs = 1500;
constexpr int kShutdownMs = 10000;

struct Group {
  c10::intrusive_ptr<c10d::TCPStore> tcp;
  std::string prefix;
  c10::intrusive_ptr<c10d::Backend> gloo;
#ifdef BALANCE_WITH_NCCL
  c10::intrusive_ptr<c10d::Backend> nccl;
#endif
  int rank = 0;
  int world = 1;
  bool is_server = false;
  std::atomic<bool> stop{false};
  std::atomic<bool> failed{false};
  std::thread heartbeat;

  // Stops the heartbeat, then says so in the store; the rank that hosts the store keeps it up until
  // every rank has said so (at most kShutdownMs), so that no heartbeat ever talks to a closed store.
  // After a failure nobody waits: the peers may be gone.
  ~Group() {
    stop = true;
    if (heartbeat.joinable()) {
      heartbeat.join();
    }
    if (failed || tcp.get() == nullptr) {
      return;
    }
    try {
      auto store = heartbeat_store();
      store->setTimeout(std::chrono::milliseconds(2000));
      store->add("stopped", 1);
      if (is_server) {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kShutdownMs);
        while (store->add("stopped", 0) < world && std::chrono::steady_clock::now() < deadline) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    } catch (...) {
      // Best effort: the process is leaving the group either way.
    }
  }

  c10::intrusive_ptr<c10d::Store> heartbeat_store() {
    return c10::make_intrusive<c10d::PrefixStore>(prefix + "/heartbeat", tcp->clone());
  }

  void start_heartbeat() {
    auto store = heartbeat_store();
    heartbeat = std::thread([this, store] {
      const std::string key = "rank" + std::to_string(rank);
      try {
        while (!stop) {
          store->add(key, 1);
          for (int waited = 0; waited < kHeartbeatMs && !stop; waited += 10) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
        }
      } catch (...) {
        // The store is gone (its host died): nothing left to signal to.
      }
    });
  }

  // Which other ranks show no heartbeat over kProbeMs; a sentence for the error message.
  std::string liveness() {
    try {
      auto store = heartbeat_store();
      store->setTimeout(std::chrono::milliseconds(2000));
      auto read = [&] {
        std::vector<int64_t> counts;
        for (int r = 0; r < world; ++r) {
          counts.push_back(store->add("rank" + std::to_string(r), 0));
        }
        return counts;
      };
      auto before = read();
      std::this_thread::sleep_for(std::chrono::milliseconds(kProbeMs));
      auto after = read();
      std::string silent;
      for (int r = 0; r < world; ++r) {
        if (r != rank && after[r] == before[r]) {
          silent += (silent.empty() ? "" : ", ") + std::to_string(r);
        }
      }
      if (silent.empty()) {
        return "every rank's heartbeat is alive (a rank is slow or stuck, not gone)";
      }
      return "no heartbeat from rank " + silent + " for " +
             std::to_string(kProbeMs) + " ms (gone, or never joined)";
    } catch (const std::exception& e) {
      return std::string("the store is unreachable, so its host (rank 0 or torchrun's agent) is gone: ") +
             message_of(e);
    }
  }
};

char* copy_message(const std::string& what) {
  char* out = static_cast<char*>(std::malloc(what.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, what.c_str(), what.size() + 1);
  }
  return out;
}

// Runs a collective: on failure the message ends with what the heartbeats say about the other ranks.
template <typename F>
int collective(Group* g, char** err, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    g->failed = true;
    *err = copy_message(message_of(e) + "; " + g->liveness());
  } catch (...) {
    g->failed = true;
    *err = copy_message("unknown C++ exception; " + g->liveness());
  }
  return 1;
}

template <typename F>
int guarded(char** err, F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    *err = copy_message(message_of(e));
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
  auto group = std::make_unique<Group>();
  guarded(err, [&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = world;
    // Not waiting for the workers here: Gloo's rendezvous below waits for each rank's address, and on a
    // timeout the heartbeats say which ranks never came.
    opts.waitWorkers = false;
    opts.timeout = timeout;
    group->tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    group->prefix = prefix;
    group->rank = rank;
    group->world = world;
    group->is_server = is_server != 0;
    group->start_heartbeat();
    auto store = c10::make_intrusive<c10d::PrefixStore>(group->prefix, group->tcp);
    auto gloo_opts = c10d::ProcessGroupGloo::Options::create(timeout);
    gloo_opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
    gloo_opts->threads = 1;
    try {
      group->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(
          c10::make_intrusive<c10d::PrefixStore>("gloo", store), rank, world, gloo_opts);
    } catch (const std::exception& e) {
      throw std::runtime_error(message_of(e) + "; " + group->liveness());
    }
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
  if (out == nullptr) {
    group->failed = true;  // no shutdown handshake with peers that never came
  }
  return out;
}

void bd_group_free(void* group) { delete static_cast<Group*>(group); }

// op: 0 sum, 1 max, 2 min.
int bd_all_reduce(void* group, at::Tensor* tensor, int op, int64_t timeout_ms, char** err) {
  auto* g = static_cast<Group*>(group);
  return collective(g, err, [&] {
    c10d::AllreduceOptions opts;
    opts.reduceOp = op == 1 ? c10d::ReduceOp::MAX : op == 2 ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    std::vector<at::Tensor> tensors{*tensor};
    wait(backend_for(g, *tensor).allreduce(tensors, opts), timeout_ms);
  });
}

int bd_broadcast(void* group, at::Tensor* tensor, int root, int64_t timeout_ms, char** err) {
  auto* g = static_cast<Group*>(group);
  return collective(g, err, [&] {
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    std::vector<at::Tensor> tensors{*tensor};
    wait(backend_for(g, *tensor).broadcast(tensors, opts), timeout_ms);
  });
}

// `outputs` holds `world` tensors shaped like `input`; rank r's input lands in outputs[r].
int bd_all_gather(void* group, at::Tensor* input, at::Tensor** outputs, int64_t timeout_ms, char** err) {
  auto* g = static_cast<Group*>(group);
  return collective(g, err, [&] {
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
  auto* g = static_cast<Group*>(group);
  return collective(g, err, [&] {
    c10d::BarrierOptions opts;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    wait(g->gloo->barrier(opts), timeout_ms);
  });
}

}  // extern "C"
