// toolkit's ExecuTorch C++ runner: loads a .pte the way an app does (Program -> Method through the C++ runtime API),
// runs it, times or counts each call, and writes the outputs as .npy files for the host to compare.
//
// Built by toolkit.device.et_cpp against the runtime headers shipped in the executorch wheel and linked against the
// wheel's runtime library (extension/pybindings/_portable_lib*.so: program loader, kernels, XNNPACK delegate), for
// aarch64 (run under qemu-aarch64 with the instruction-count plugin) and for the host (wall time).
//
// Usage:
//   et_runner --model M.pte --method forward --out DIR --results R.json [--id N] [--threads 1] [--markers]
//             [--warmup W] [--runs R] [--history H] --step in0.bin,in1.bin [--step ...]
// Each --step lists one raw little-endian file per method input (sizes checked against the program's metadata).
//   1. parity trajectory: one call per --step in a row (state carried inside the program), every output written to
//      DIR/step<s>_<k>.npy; the first of these calls is the first call after load_method ("first call");
//   2. without --history: W warm-up calls then R measured calls on step 0's inputs (state carried on);
//      with --history H: R samples of: fresh load_method (state back to its initial value), H untimed calls (step
//      inputs in turn), then the measured call (a streaming step at a fixed history);
// Inputs are set again before EVERY execute: a method's planned input memory is reused by intermediates.
// With --markers every execute is wrapped in the qemu plugin's region markers (getpid with magic arguments,
// harmless on a real kernel). Results: R.json; exit status 0 when the results file was written (errors inside it).
#include <executorch/runtime/core/data_loader.h>
#include <executorch/runtime/core/evalue.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/core/memory_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/method_meta.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

// extension/threadpool/threadpool.h needs pthreadpool.h, which the wheel does not ship: declare the two members used
// (non-virtual, so only their exported symbols matter).
namespace executorch::extension::threadpool {
class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
  size_t get_thread_count() const;
};
ThreadPool* get_threadpool();
}  // namespace executorch::extension::threadpool

namespace et = executorch::runtime;
using executorch::aten::ScalarType;
using executorch::aten::TensorImpl;

namespace {

constexpr uint64_t kMagic = 0x746f6f6c6b6974ULL;  // "toolkit": must match qemu_icount.c
constexpr long kBegin = 1, kEnd = 2, kRange = 3;
constexpr uint64_t kOverheadRegion = 999999999ULL;
bool g_markers = false;

void mark(long op, uint64_t region, uint64_t lo = 0, uint64_t hi = 0) {
#if defined(__aarch64__)
  if (g_markers) syscall(172, kMagic, op, region, lo, hi);  // __NR_getpid on aarch64
#else
  (void)op, (void)region, (void)lo, (void)hi;
#endif
}

double now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

std::string json_str(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) { char b[8]; snprintf(b, sizeof b, "\\u%04x", c); o += b; }
    else o += c;
  }
  return o + "\"";
}

std::string err_name(et::Error e) {
  char b[64];
  snprintf(b, sizeof b, "error 0x%x", static_cast<unsigned>(e));
  switch (e) {
    case et::Error::InvalidProgram: return std::string(b) + " (InvalidProgram)";
    case et::Error::InvalidArgument: return std::string(b) + " (InvalidArgument)";
    case et::Error::NotSupported: return std::string(b) + " (NotSupported)";
    case et::Error::NotImplemented: return std::string(b) + " (NotImplemented)";
    case et::Error::OperatorMissing: return std::string(b) + " (OperatorMissing)";
    case et::Error::MemoryAllocationFailed: return std::string(b) + " (MemoryAllocationFailed)";
    case et::Error::NotFound: return std::string(b) + " (NotFound)";
    case et::Error::AccessFailed: return std::string(b) + " (AccessFailed)";
    case et::Error::InvalidState: return std::string(b) + " (InvalidState)";
    case et::Error::DelegateInvalidCompatibility: return std::string(b) + " (DelegateInvalidCompatibility)";
    default: return b;
  }
}

struct Failure {
  std::string what;
};

// The whole .pte in one aligned buffer; segments are served from it (load) or copied out of it (load_into: the
// mutable state of a stateful method is initialised through load_into).
class FileBufferLoader final : public et::DataLoader {
 public:
  explicit FileBufferLoader(const std::string& path) {
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) throw Failure{"cannot open " + path + ": " + strerror(errno)};
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n <= 0) { fclose(f); throw Failure{path + " is empty"}; }
    void* p = nullptr;
    if (posix_memalign(&p, 4096, static_cast<size_t>(n)) != 0) { fclose(f); throw Failure{"out of memory"}; }
    data_.reset(static_cast<uint8_t*>(p));
    size_ = static_cast<size_t>(n);
    size_t got = fread(data_.get(), 1, size_, f);
    fclose(f);
    if (got != size_) throw Failure{"short read of " + path};
  }
  et::Result<et::FreeableBuffer> load(size_t offset, size_t size, const SegmentInfo&) const override {
    if (offset > size_ || size > size_ - offset) return et::Error::InvalidArgument;
    return et::FreeableBuffer(data_.get() + offset, size, nullptr);
  }
  et::Error load_into(size_t offset, size_t size, const SegmentInfo&, void* buffer) const override {
    if (offset > size_ || size > size_ - offset || buffer == nullptr) return et::Error::InvalidArgument;
    memcpy(buffer, data_.get() + offset, size);
    return et::Error::Ok;
  }
  et::Result<size_t> size() const override { return size_; }

 private:
  struct Free { void operator()(uint8_t* p) const { free(p); } };
  std::unique_ptr<uint8_t, Free> data_;
  size_t size_ = 0;
};

// Method allocator, planned buffers (one per MethodMeta::memory_planned_buffer_size) and temp allocator: rebuilt for
// every load_method so a reload starts from the program's initial state.
struct Memory {
  std::vector<uint8_t> method_pool, temp_pool;
  std::vector<std::vector<uint8_t>> planned;
  std::vector<et::Span<uint8_t>> spans;
  std::unique_ptr<et::MemoryAllocator> method_alloc, temp_alloc;
  std::unique_ptr<et::HierarchicalAllocator> planned_alloc;
  std::unique_ptr<et::MemoryManager> manager;

  explicit Memory(const et::MethodMeta& meta) {
    method_pool.assign(32u << 20, 0);
    temp_pool.assign(8u << 20, 0);
    for (size_t i = 0; i < meta.num_memory_planned_buffers(); ++i) {
      auto sz = meta.memory_planned_buffer_size(i);
      if (!sz.ok()) throw Failure{"memory_planned_buffer_size(" + std::to_string(i) + "): " + err_name(sz.error())};
      planned.emplace_back(static_cast<size_t>(*sz), 0);
    }
    for (auto& b : planned) spans.emplace_back(b.data(), b.size());
    method_alloc = std::make_unique<et::MemoryAllocator>(static_cast<uint32_t>(method_pool.size()), method_pool.data());
    temp_alloc = std::make_unique<et::MemoryAllocator>(static_cast<uint32_t>(temp_pool.size()), temp_pool.data());
    planned_alloc = std::make_unique<et::HierarchicalAllocator>(et::Span<et::Span<uint8_t>>(spans.data(), spans.size()));
    manager = std::make_unique<et::MemoryManager>(method_alloc.get(), planned_alloc.get(), temp_alloc.get());
  }
};

// One method input as the app owns it: a TensorImpl over our own buffer, shaped by the program's metadata.
struct Input {
  std::vector<int32_t> sizes;
  std::vector<uint8_t> dim_order;
  std::vector<std::vector<uint8_t>> data;  // per step
  ScalarType dtype;
  size_t nbytes = 0;
};

const char* npy_descr(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "<f4";
    case ScalarType::Double: return "<f8";
    case ScalarType::Half: return "<f2";
    case ScalarType::Long: return "<i8";
    case ScalarType::Int: return "<i4";
    case ScalarType::Short: return "<i2";
    case ScalarType::Char: return "|i1";
    case ScalarType::Byte: return "|u1";
    case ScalarType::Bool: return "|b1";
    default: return nullptr;
  }
}

void write_npy(const std::string& path, const executorch::aten::Tensor& t) {
  const char* descr = npy_descr(t.scalar_type());
  if (!descr) throw Failure{"output dtype " + std::to_string(static_cast<int>(t.scalar_type())) + " not supported"};
  std::string shape = "(";
  for (ssize_t d = 0; d < t.dim(); ++d) shape += std::to_string(t.size(d)) + (t.dim() == 1 ? "," : (d + 1 < t.dim() ? ", " : ""));
  shape += ")";
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  FILE* f = fopen(path.c_str(), "wb");
  if (!f) throw Failure{"cannot write " + path + ": " + strerror(errno)};
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  uint16_t hl = static_cast<uint16_t>(header.size());
  fwrite(magic, 1, 8, f);
  fwrite(&hl, 2, 1, f);
  fwrite(header.data(), 1, header.size(), f);
  fwrite(t.const_data_ptr(), 1, t.nbytes(), f);
  fclose(f);
}

std::vector<uint8_t> read_file(const std::string& path) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) throw Failure{"cannot open input " + path + ": " + strerror(errno)};
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  fclose(f);
  return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == sep) { out.push_back(s.substr(start, i - start)); start = i + 1; }
  return out;
}

// Code ranges counted apart by the plugin (marking thread only): where the instructions of a call go.
std::vector<std::string> register_ranges() {
  static const char* libs[][2] = {{"_portable_lib", "executorch"}, {"libtorch_cpu.so", "libtorch_cpu"},
                                  {"libc.so", "libc"}, {"libm.so", "libm"}, {"libstdc++.so", "libstdc++"}};
  std::vector<std::string> names;
  FILE* f = fopen("/proc/self/maps", "r");
  if (!f) return names;
  std::vector<std::pair<uint64_t, uint64_t>> found(sizeof libs / sizeof libs[0], {0, 0});
  char line[4096];
  while (fgets(line, sizeof line, f)) {
    uint64_t lo, hi;
    char perms[8] = {0};
    if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s", &lo, &hi, perms) != 3 || !strchr(perms, 'x')) continue;
    const char* slash = strrchr(line, '/');
    if (!slash) continue;
    for (size_t k = 0; k < found.size(); ++k)
      if (strncmp(slash + 1, libs[k][0], strlen(libs[k][0])) == 0 && found[k].first == 0) found[k] = {lo, hi};
  }
  fclose(f);
  for (size_t k = 0; k < found.size(); ++k)
    if (found[k].first) { mark(kRange, names.size(), found[k].first, found[k].second); names.push_back(libs[k][1]); }
  return names;
}

struct Args {
  std::string model, method = "forward", out = ".", results = "results.json";
  int id = 0, threads = 1, warmup = 2, runs = 5, history = -1;
  std::vector<std::vector<std::string>> steps;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) throw Failure{"missing value after " + k};
      return argv[++i];
    };
    auto num = [&]() -> int {
      std::string v = val();
      char* end = nullptr;
      long n = strtol(v.c_str(), &end, 10);
      if (v.empty() || *end) throw Failure{k + ": '" + v + "' is not an integer"};
      return static_cast<int>(n);
    };
    if (k == "--model") a.model = val();
    else if (k == "--method") a.method = val();
    else if (k == "--out") a.out = val();
    else if (k == "--results") a.results = val();
    else if (k == "--id") a.id = num();
    else if (k == "--threads") a.threads = num();
    else if (k == "--warmup") a.warmup = num();
    else if (k == "--runs") a.runs = num();
    else if (k == "--history") a.history = num();
    else if (k == "--markers") g_markers = true;
    else if (k == "--step") a.steps.push_back(split(val(), ','));
    else throw Failure{"unknown argument " + k};
  }
  if (a.model.empty()) throw Failure{"--model is required"};
  if (a.steps.empty()) throw Failure{"at least one --step (the input files) is required"};
  if (a.runs < 1 || a.warmup < 0) throw Failure{"--runs must be >= 1 and --warmup >= 0"};
  return a;
}

struct Report {
  std::vector<uint64_t> regions, parity_regions;
  std::vector<double> wall_ms, execute_ms;
  std::vector<std::vector<std::string>> outputs;
  double load_program_ms = 0, load_method_ms = 0, first_call_ms = 0;
  size_t threads_before = 0, threads_after = 0;
  std::vector<std::string> ranges;
  std::string error;
};

class Runner {
 public:
  Runner(const Args& a, Report& rep) : a_(a), rep_(rep) {}

  void run() {
    double t0 = now_ms();
    loader_ = std::make_unique<FileBufferLoader>(a_.model);
    auto prog = et::Program::load(loader_.get(), et::Program::Verification::InternalConsistency);
    if (!prog.ok()) throw Failure{"Program::load failed: " + err_name(prog.error())};
    program_ = std::make_unique<et::Program>(std::move(*prog));
    rep_.load_program_ms = now_ms() - t0;
    auto meta = program_->method_meta(a_.method.c_str());
    if (!meta.ok()) throw Failure{"method '" + a_.method + "' not found in the program: " + err_name(meta.error())};
    read_inputs(*meta);
    t0 = now_ms();
    load_method();
    rep_.load_method_ms = now_ms() - t0;

    for (size_t s = 0; s < a_.steps.size(); ++s) {  // 1. parity trajectory, state carried
      uint64_t region = static_cast<uint64_t>(a_.id) * 100000 + 90000 + s;
      double ms = call(s, region, true).first;
      if (s == 0) rep_.first_call_ms = ms;
      rep_.parity_regions.push_back(region);
      std::vector<std::string> files;
      for (size_t k = 0; k < method_->outputs_size(); ++k) {
        const et::EValue& v = method_->get_output(k);
        if (!v.isTensor()) throw Failure{"output " + std::to_string(k) + " is not a tensor"};
        std::string path = a_.out + "/step" + std::to_string(s) + "_" + std::to_string(k) + ".npy";
        write_npy(path, v.toTensor());
        files.push_back(path);
      }
      rep_.outputs.push_back(files);
    }
    if (a_.history < 0) {  // 2a. warm-up, then measured calls on step 0's inputs
      for (int i = 0; i < a_.warmup; ++i) call(0, 0, false);
      for (int k = 0; k < a_.runs; ++k) measured(0, k);
    } else {  // 2b. a streaming step at a fixed history: reload, replay, measure the next call
      for (int k = -a_.warmup; k < a_.runs; ++k) {
        load_method();
        for (int j = 0; j < a_.history; ++j) call(j % a_.steps.size(), 0, false);
        size_t s = a_.history % a_.steps.size();
        if (k < 0) call(s, 0, false);
        else measured(s, k);
      }
    }
  }

 private:
  void read_inputs(const et::MethodMeta& meta) {
    inputs_.resize(meta.num_inputs());
    for (size_t i = 0; i < meta.num_inputs(); ++i) {
      auto tag = meta.input_tag(i);
      if (!tag.ok() || *tag != et::Tag::Tensor) throw Failure{"input " + std::to_string(i) + " is not a tensor"};
      auto info = meta.input_tensor_meta(i);
      if (!info.ok()) throw Failure{"input_tensor_meta(" + std::to_string(i) + "): " + err_name(info.error())};
      Input& in = inputs_[i];
      in.sizes.assign(info->sizes().begin(), info->sizes().end());
      in.dim_order.assign(info->dim_order().begin(), info->dim_order().end());
      in.dtype = info->scalar_type();
      in.nbytes = info->nbytes();
    }
    for (size_t s = 0; s < a_.steps.size(); ++s) {
      if (a_.steps[s].size() != inputs_.size())
        throw Failure{"step " + std::to_string(s) + " has " + std::to_string(a_.steps[s].size()) + " input files, the method takes " + std::to_string(inputs_.size())};
      for (size_t i = 0; i < inputs_.size(); ++i) {
        auto bytes = read_file(a_.steps[s][i]);
        if (bytes.size() != inputs_[i].nbytes)
          throw Failure{"input " + std::to_string(i) + " (" + a_.steps[s][i] + ") has " + std::to_string(bytes.size()) + " bytes, the method expects " + std::to_string(inputs_[i].nbytes)};
        inputs_[i].data.push_back(std::move(bytes));
      }
    }
  }

  void load_method() {
    method_.reset();
    auto meta = program_->method_meta(a_.method.c_str());
    memory_ = std::make_unique<Memory>(*meta);
    auto m = program_->load_method(a_.method.c_str(), memory_->manager.get());
    if (!m.ok()) throw Failure{"load_method('" + a_.method + "') failed: " + err_name(m.error())};
    method_ = std::make_unique<et::Method>(std::move(*m));
  }

  // set every input (again: planned input memory is reused by intermediates), then execute; returns (call ms,
  // execute-only ms). When `marked`, the execute is wrapped in the plugin's markers for `region`.
  std::pair<double, double> call(size_t step, uint64_t region, bool marked) {
    double t0 = now_ms();
    for (size_t i = 0; i < inputs_.size(); ++i) {
      Input& in = inputs_[i];
      TensorImpl impl(in.dtype, static_cast<ssize_t>(in.sizes.size()), in.sizes.data(), in.data[step].data(),
                      in.dim_order.data());
      et::Error e = method_->set_input(et::EValue(executorch::aten::Tensor(&impl)), i);
      if (e != et::Error::Ok) throw Failure{"set_input(" + std::to_string(i) + ") failed: " + err_name(e)};
    }
    double t1 = now_ms();
    if (marked) mark(kBegin, region);
    et::Error e = method_->execute();
    if (marked) mark(kEnd, region);
    double t2 = now_ms();
    if (e != et::Error::Ok) throw Failure{"execute failed: " + err_name(e)};
    return {t2 - t0, t2 - t1};
  }

  void measured(size_t step, int k) {
    uint64_t region = static_cast<uint64_t>(a_.id) * 100000 + static_cast<uint64_t>(k);
    auto ms = call(step, region, true);
    rep_.regions.push_back(region);
    rep_.wall_ms.push_back(ms.first);
    rep_.execute_ms.push_back(ms.second);
  }

  const Args& a_;
  Report& rep_;
  std::unique_ptr<FileBufferLoader> loader_;
  std::unique_ptr<et::Program> program_;
  std::unique_ptr<Memory> memory_;
  std::unique_ptr<et::Method> method_;
  std::vector<Input> inputs_;
};

template <typename T>
std::string json_list(const std::vector<T>& v) {
  std::string o = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    char b[64];
    if constexpr (std::is_floating_point_v<T>) snprintf(b, sizeof b, "%.6f", v[i]);
    else snprintf(b, sizeof b, "%" PRIu64, static_cast<uint64_t>(v[i]));
    o += (i ? ", " : "") + std::string(b);
  }
  return o + "]";
}

void write_results(const Args& a, const Report& r) {
  std::string o = "{\n \"format\": \"toolkit-runner-results/1\",\n \"runner\": \"toolkit et_runner (ExecuTorch C++ runtime)\",\n";
#if defined(__aarch64__)
  o += " \"machine\": \"aarch64\",\n";
#else
  o += " \"machine\": \"x86_64\",\n";
#endif
  o += " \"threads\": " + std::to_string(a.threads) + ",\n \"threadpool_threads\": [" + std::to_string(r.threads_before) +
       ", " + std::to_string(r.threads_after) + "],\n";
  o += " \"overhead_region\": " + std::to_string(kOverheadRegion) + ",\n \"ranges\": [";
  for (size_t i = 0; i < r.ranges.size(); ++i) o += (i ? ", " : "") + json_str(r.ranges[i]);
  o += "],\n \"cases\": [{\"id\": " + std::to_string(a.id) + ", \"regions\": " + json_list(r.regions) +
       ", \"parity_regions\": " + json_list(r.parity_regions) + ", \"wall_ms\": " + json_list(r.wall_ms) +
       ", \"execute_ms\": " + json_list(r.execute_ms) + ", \"history\": " + std::to_string(a.history);
  char b[160];
  snprintf(b, sizeof b, ", \"load_program_ms\": %.4f, \"load_method_ms\": %.4f, \"first_call_ms\": %.4f",
           r.load_program_ms, r.load_method_ms, r.first_call_ms);
  o += b;
  o += ", \"outputs\": [";
  for (size_t s = 0; s < r.outputs.size(); ++s) {
    o += s ? ", {" : "{";
    for (size_t k = 0; k < r.outputs[s].size(); ++k)
      o += (k ? ", " : "") + json_str(std::to_string(k)) + ": " + json_str(r.outputs[s][k]);
    o += "}";
  }
  o += "], \"error\": " + (r.error.empty() ? std::string("null") : json_str(r.error)) + "}]\n}\n";
  std::string tmp = a.results + ".tmp";
  FILE* f = fopen(tmp.c_str(), "w");
  if (!f || fwrite(o.data(), 1, o.size(), f) != o.size() || fclose(f) != 0 || rename(tmp.c_str(), a.results.c_str()) != 0) {
    fprintf(stderr, "et_runner: cannot write %s\n", a.results.c_str());
    exit(3);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  try {
    a = parse_args(argc, argv);
  } catch (const Failure& f) {
    fprintf(stderr, "et_runner: %s\n", f.what.c_str());
    return 2;
  }
  et::runtime_init();
  Report rep;
  auto* pool = executorch::extension::threadpool::get_threadpool();
  rep.threads_before = pool ? pool->get_thread_count() : 0;
  // One thread: with the default pool (one per core) the same call's count varied by up to 50% under qemu.
  if (pool) pool->_unsafe_reset_threadpool(static_cast<uint32_t>(a.threads));
  rep.threads_after = pool ? pool->get_thread_count() : 0;
  rep.ranges = register_ranges();
  for (int i = 0; i < 3; ++i) {  // the markers' own cost, subtracted on the host
    mark(kBegin, kOverheadRegion);
    mark(kEnd, kOverheadRegion);
  }
  try {
    Runner(a, rep).run();
  } catch (const Failure& f) {
    rep.error = f.what;
  }
  write_results(a, rep);
  printf("toolkit-run {\"case\": %d, \"runs\": %zu, \"error\": %s}\n", a.id, rep.regions.size(),
         rep.error.empty() ? "null" : json_str(rep.error).c_str());
  return 0;
}
