// A stand-in accelerator for tests: PyTorch's PrivateUse1 backend, renamed 'mlu' from Python.
//
// Tensors live in host memory, but torch sees a separate device: they come from our own
// allocator, carry device type PrivateUse1, and every operator without a kernel of its own runs
// the CPU kernel on zero-copy CPU views of the same memory (the boxed fallback below). Copies
// between host and device, scalar reads and the bytes they move are counted, so tests can
// measure how often code waits on the device. It is not a model of any real card.
#include <torch/extension.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/EmptyTensor.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/alloc_cpu.h>

#include <array>
#include <atomic>
#include <cstring>
#include <mutex>
#include <unordered_set>

namespace standin {

constexpr int kMaxDevices = 16;
constexpr c10::DeviceType kDev = c10::DeviceType::PrivateUse1;

// ---------------------------------------------------------------------------------------------
// Counters
struct Counters {
  std::atomic<int64_t> d2h_copies{0}, h2d_copies{0}, d2d_copies{0};
  std::atomic<int64_t> d2h_bytes{0}, h2d_bytes{0}, d2d_bytes{0};
  std::atomic<int64_t> scalar_reads{0};  // the part of d2h_copies that were .item()/bool()
  std::atomic<int64_t> synchronizes{0}, fallback_ops{0};
  std::array<std::atomic<int64_t>, kMaxDevices> allocated{}, peak{};
};
Counters counters;

std::atomic<int> device_count{2};
// Off until Python registers the 'mlu' name: a process may load the library early (before any
// backward pass sizes autograd's per-device queues) without torch reporting an accelerator yet.
std::atomic<bool> active{false};
thread_local int current_device = 0;

void check_index(int64_t index) {
  TORCH_CHECK(index >= 0 && index < device_count.load(), "mlu (stand-in): invalid device index ",
              index, "; ", device_count.load(), " stand-in devices exist");
}

void note_alloc(int dev, int64_t n) {
  int64_t now = counters.allocated[dev].fetch_add(n) + n;
  int64_t seen = counters.peak[dev].load();
  while (now > seen && !counters.peak[dev].compare_exchange_weak(seen, now)) {
  }
}

// ---------------------------------------------------------------------------------------------
// Allocator: host memory, labelled with a stand-in device. A block either owns its memory or
// keeps a CPU storage alive (results computed by CPU kernels are adopted without a copy).
struct Block {
  void* data;
  int64_t nbytes;
  int device;
  c10::Storage keep;  // defined when the memory belongs to a CPU storage
};

void free_block(void* ctx) {
  auto* b = static_cast<Block*>(ctx);
  counters.allocated[b->device].fetch_sub(b->nbytes);
  if (!b->keep) c10::free_cpu(b->data);
  delete b;
}

struct MluAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    int dev = current_device;
    void* data = n ? c10::alloc_cpu(n) : nullptr;
    note_alloc(dev, static_cast<int64_t>(n));
    return {data, new Block{data, static_cast<int64_t>(n), dev, {}}, &free_block,
            c10::Device(kDev, static_cast<c10::DeviceIndex>(dev))};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};
MluAllocator allocator;
REGISTER_ALLOCATOR(kDev, &allocator);

// Pinned host memory: ordinary host memory whose addresses we remember, so is_pinned() works.
std::mutex pinned_mutex;
std::unordered_set<const void*> pinned_ptrs;

void free_pinned(void* data) {
  {
    std::lock_guard<std::mutex> lock(pinned_mutex);
    pinned_ptrs.erase(data);
  }
  c10::free_cpu(data);
}

struct PinnedAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    void* data = n ? c10::alloc_cpu(n) : nullptr;
    if (data) {
      std::lock_guard<std::mutex> lock(pinned_mutex);
      pinned_ptrs.insert(data);
    }
    return {data, data, &free_pinned, c10::Device(c10::kCPU)};
  }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};
PinnedAllocator pinned_allocator;

// ---------------------------------------------------------------------------------------------
// Device guard: a current device per thread, one default stream, events not supported.
struct MluGuardImpl final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return kDev; }
  c10::Device exchangeDevice(c10::Device d) const override {
    auto old = getDevice();
    if (d.index() != old.index()) setDevice(d);
    return old;
  }
  c10::Device getDevice() const override {
    return c10::Device(kDev, static_cast<c10::DeviceIndex>(current_device));
  }
  void setDevice(c10::Device d) const override {
    check_index(d.index());
    current_device = d.index();
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override { current_device = d.index(); }
  c10::Stream getStream(c10::Device d) const override {
    return c10::Stream(c10::Stream::DEFAULT, d);
  }
  c10::Stream exchangeStream(c10::Stream s) const override {
    return c10::Stream(c10::Stream::DEFAULT, s.device());
  }
  c10::DeviceIndex deviceCount() const noexcept override {
    return static_cast<c10::DeviceIndex>(device_count.load());
  }
  bool queryStream(const c10::Stream&) const override { return true; }
  void synchronizeStream(const c10::Stream&) const override {}
  void synchronizeDevice(const c10::DeviceIndex) const override {}
};
C10_REGISTER_GUARD_IMPL(PrivateUse1, MluGuardImpl);

// ---------------------------------------------------------------------------------------------
// Random numbers: one CPU generator per stand-in device, used by random operators on that
// device when no generator is passed (seeded by torch.mlu.manual_seed / torch.manual_seed).
std::once_flag generators_once;
std::array<at::Generator, kMaxDevices> generators;

const at::Generator& default_generator(int64_t index) {
  std::call_once(generators_once, [] {
    for (auto& g : generators) g = at::make_generator<at::CPUGeneratorImpl>();
  });
  check_index(index < 0 ? current_device : index);
  return generators[index < 0 ? current_device : index];
}

struct MluHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return active.load() && device_count.load() > 0; }
  const at::Generator& getDefaultGenerator(c10::DeviceIndex index) const override {
    return default_generator(index);
  }
  at::Generator getNewGenerator(c10::DeviceIndex) const override {
    return at::make_generator<at::CPUGeneratorImpl>();
  }
  at::Device getDeviceFromPtr(void*) const override {
    return c10::Device(kDev, static_cast<c10::DeviceIndex>(current_device));
  }
  bool isPinnedPtr(const void* data) const override {
    std::lock_guard<std::mutex> lock(pinned_mutex);
    return pinned_ptrs.count(data) > 0;
  }
  c10::Allocator* getPinnedMemoryAllocator() const override { return &pinned_allocator; }
  bool hasPrimaryContext(c10::DeviceIndex) const override { return true; }
  c10::DeviceIndex deviceCount() const override {
    return static_cast<c10::DeviceIndex>(device_count.load());
  }
  void setCurrentDevice(c10::DeviceIndex d) const override {
    check_index(d);
    current_device = d;
  }
  c10::DeviceIndex getCurrentDevice() const override {
    return static_cast<c10::DeviceIndex>(current_device);
  }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex d) const override {
    auto old = current_device;
    setCurrentDevice(d);
    return static_cast<c10::DeviceIndex>(old);
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex d) const override {
    return exchangeDevice(d);
  }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t newsize) const override;
};

// ---------------------------------------------------------------------------------------------
// CPU views of device memory, and device tensors over memory that CPU kernels produced.
void release_storage(void* ctx) { delete static_cast<c10::Storage*>(ctx); }

at::Tensor host_view(const at::Tensor& t, bool resizable = false) {
  const c10::Storage& st = t.storage();
  c10::DataPtr ptr(st.mutable_data(), new c10::Storage(st), &release_storage,
                   c10::Device(c10::kCPU));
  c10::Storage host(c10::Storage::use_byte_size_t(), st.nbytes(), std::move(ptr),
                    resizable ? c10::GetCPUAllocator() : nullptr, resizable);
  auto out = at::detail::make_tensor<c10::TensorImpl>(
      std::move(host), c10::DispatchKeySet(c10::DispatchKey::CPU), t.dtype());
  out.unsafeGetTensorImpl()->set_sizes_and_strides(t.sizes(), t.strides(), t.storage_offset());
  return out;
}

at::Tensor adopt(const at::Tensor& host, c10::Device device) {
  const c10::Storage& st = host.storage();
  int dev = device.index() < 0 ? current_device : device.index();
  int64_t n = static_cast<int64_t>(st.nbytes());
  note_alloc(dev, n);
  void* data = st.mutable_data();
  c10::DataPtr ptr(data, new Block{data, n, dev, st}, &free_block,
                   c10::Device(kDev, static_cast<c10::DeviceIndex>(dev)));
  c10::Storage mine(c10::Storage::use_byte_size_t(), n, std::move(ptr), &allocator, true);
  auto out = at::detail::make_tensor<c10::TensorImpl>(
      std::move(mine), c10::DispatchKeySet(c10::DispatchKey::PrivateUse1), host.dtype());
  out.unsafeGetTensorImpl()->set_sizes_and_strides(host.sizes(), host.strides(),
                                                   host.storage_offset());
  return out;
}

void grow_storage(const c10::Storage& storage, size_t nbytes) {
  if (nbytes <= storage.nbytes()) return;
  TORCH_CHECK(storage.resizable(), "mlu (stand-in): trying to resize storage that is not resizable");
  c10::DeviceGuard guard(storage.device());
  c10::DataPtr fresh = allocator.allocate(nbytes);
  if (storage.nbytes() && storage.data()) std::memcpy(fresh.get(), storage.data(), storage.nbytes());
  const_cast<c10::Storage&>(storage).set_data_ptr_noswap(std::move(fresh));
  const_cast<c10::Storage&>(storage).set_nbytes(nbytes);
}

void MluHooks::resizePrivateUse1Bytes(const c10::Storage& storage, size_t newsize) const {
  grow_storage(storage, newsize);
}

// ---------------------------------------------------------------------------------------------
// Kernels of our own: allocation, copies, views, scalar reads, convolution.
at::Tensor empty_memory_format(c10::IntArrayRef size, std::optional<at::ScalarType> dtype,
                               std::optional<at::Layout>, std::optional<at::Device> device,
                               std::optional<bool>, std::optional<at::MemoryFormat> fmt) {
  c10::OptionalDeviceGuard guard(device);
  return at::detail::empty_generic(size, &allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                   c10::dtype_or_default(dtype), fmt);
}

at::Tensor empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride,
                         std::optional<at::ScalarType> dtype, std::optional<at::Layout>,
                         std::optional<at::Device> device, std::optional<bool>) {
  c10::OptionalDeviceGuard guard(device);
  return at::detail::empty_strided_generic(size, stride, &allocator,
                                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           c10::dtype_or_default(dtype));
}

void count_copy(const at::Tensor& src, const at::Tensor& dst) {
  int64_t bytes = src.numel() * static_cast<int64_t>(src.element_size());
  bool from_dev = src.device().type() == kDev, to_dev = dst.device().type() == kDev;
  if (from_dev && to_dev) {
    counters.d2d_copies++;
    counters.d2d_bytes += bytes;
  } else if (from_dev) {
    counters.d2h_copies++;
    counters.d2h_bytes += bytes;
  } else if (to_dev) {
    counters.h2d_copies++;
    counters.h2d_bytes += bytes;
  }
}

at::Tensor copy_from(const at::Tensor& self, const at::Tensor& dst, bool) {
  TORCH_CHECK(self.device().type() == c10::kCPU || self.device().type() == kDev,
              "mlu (stand-in): copies only between cpu and mlu, not from ", self.device());
  TORCH_CHECK(dst.device().type() == c10::kCPU || dst.device().type() == kDev,
              "mlu (stand-in): copies only between cpu and mlu, not to ", dst.device());
  count_copy(self, dst);
  at::Tensor s = self.device().type() == kDev ? host_view(self) : self;
  at::Tensor d = dst.device().type() == kDev ? host_view(dst) : dst;
  d.copy_(s);
  return dst;
}

at::Tensor copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  dst.resize_(self.sizes());
  return copy_from(self, dst, false);
}

const at::Tensor& resize_(const at::Tensor& self, c10::IntArrayRef size,
                          std::optional<at::MemoryFormat> fmt) {
  auto* impl = self.unsafeGetTensorImpl();
  impl->set_sizes_contiguous(size);
  if (fmt) impl->empty_tensor_restride(*fmt);
  size_t needed = at::detail::computeStorageNbytes(self.sizes(), self.strides(),
                                                   self.element_size(), self.storage_offset());
  grow_storage(self.storage(), needed);
  return self;
}

at::Tensor view(const at::Tensor& self, c10::IntArrayRef size) { return at::native::view(self, size); }

at::Tensor as_strided(const at::Tensor& self, c10::IntArrayRef size, c10::IntArrayRef stride,
                      std::optional<int64_t> offset) {
  return at::native::as_strided_tensorimpl(self, size, stride, offset);
}

// set_: point a device tensor at another device storage (used by storage copies, deepcopy, load).
at::Tensor& set_storage(at::Tensor& self, c10::Storage source, int64_t offset, c10::IntArrayRef size,
                        c10::IntArrayRef stride) {
  TORCH_CHECK(source.device() == self.device(), "Attempted to set the storage of a tensor on device \"",
              self.device(), "\" to a storage on different device \"", source.device(),
              "\".  This is no longer allowed; the devices must match.");
  auto* impl = self.unsafeGetTensorImpl();
  impl->set_storage_keep_dtype(std::move(source));
  if (stride.empty()) {
    impl->set_sizes_contiguous(size);
  } else {
    impl->set_sizes_and_strides(size, stride);
  }
  impl->set_storage_offset(offset);
  size_t needed = at::detail::computeStorageNbytes(self.sizes(), self.strides(), self.element_size(), offset);
  grow_storage(self.storage(), needed);
  return self;
}

at::Tensor& set_source_storage(at::Tensor& self, c10::Storage source) {
  int64_t n = static_cast<int64_t>(source.nbytes() / self.element_size());
  return set_storage(self, std::move(source), 0, {n}, {});
}

at::Tensor& set_source_tensor(at::Tensor& self, const at::Tensor& source) {
  if (self.unsafeGetTensorImpl() == source.unsafeGetTensorImpl()) return self;
  return set_storage(self, source.storage(), source.storage_offset(), source.sizes(), source.strides());
}

at::Tensor& set_empty(at::Tensor& self) {
  c10::Storage fresh(c10::Storage::use_byte_size_t(), 0, allocator.allocate(0), &allocator, true);
  return set_storage(self, std::move(fresh), 0, {0}, {});
}

at::Scalar local_scalar_dense(const at::Tensor& self) {
  counters.d2h_copies++;
  counters.scalar_reads++;
  counters.d2h_bytes += static_cast<int64_t>(self.element_size());
  return at::_local_scalar_dense(host_view(self));
}

// Backward passes on 'mlu' run on autograd's worker thread for the device, whose intra-op thread
// count was fixed when it started; CPU kernels split reductions by thread count, so each kernel
// first takes the process's current setting (torch.set_num_threads), as the CPU run does.
void follow_thread_setting() { at::init_num_threads(); }

// The refusal a real accelerator gives when one operator mixes devices. As on CUDA, CPU tensors
// with no dimensions (scalars) may join device tensors.
void check_same_device(const char* op, const std::vector<at::Tensor>& tensors) {
  std::optional<c10::Device> seen;
  for (const auto& t : tensors) {
    if (!t.defined()) continue;
    if (t.device().type() == c10::kCPU && t.dim() == 0) continue;
    if (!seen) {
      seen = t.device();
    } else if (*seen != t.device()) {
      TORCH_CHECK(false, "Expected all tensors to be on the same device, but found at least two devices, ",
                  *seen, " and ", t.device(), "! (when checking arguments for ", op, ")");
    }
  }
}

std::optional<at::Tensor> on_host(const std::optional<at::Tensor>& t) {
  if (!t || !t->defined()) return t;
  return host_view(*t);
}

at::Tensor convolution(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias, c10::IntArrayRef stride,
                       c10::IntArrayRef padding, c10::IntArrayRef dilation, bool transposed,
                       c10::IntArrayRef output_padding, int64_t groups) {
  check_same_device("convolution", {input, weight, bias.value_or(at::Tensor())});
  follow_thread_setting();
  auto out = at::convolution(host_view(input), host_view(weight), on_host(bias), stride, padding,
                             dilation, transposed, output_padding, groups);
  return adopt(out, input.device());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> convolution_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    c10::IntArrayRef stride, c10::IntArrayRef padding, c10::IntArrayRef dilation, bool transposed,
    c10::IntArrayRef output_padding, int64_t groups, std::array<bool, 3> mask) {
  check_same_device("convolution_backward", {grad_output, input, weight});
  follow_thread_setting();
  std::optional<std::vector<int64_t>> bias_sizes;
  if (mask[2]) bias_sizes = std::vector<int64_t>{transposed ? weight.size(1) * groups : weight.size(0)};
  std::optional<c10::IntArrayRef> bias_ref;
  if (bias_sizes) bias_ref = c10::IntArrayRef(*bias_sizes);
  auto grads = at::convolution_backward(host_view(grad_output), host_view(input), host_view(weight),
                                        bias_ref, stride, padding, dilation, transposed,
                                        output_padding, groups, mask);
  auto back = [&](const at::Tensor& t) { return t.defined() ? adopt(t, input.device()) : t; };
  return {back(std::get<0>(grads)), back(std::get<1>(grads)), back(std::get<2>(grads))};
}

// ---------------------------------------------------------------------------------------------
// Every other operator: the CPU kernel on host views of the device tensors, results adopted.
void collect(const c10::IValue& v, std::vector<at::Tensor>& out) {
  if (v.isTensor()) {
    out.push_back(v.toTensor());
  } else if (v.isTensorList()) {
    for (const at::Tensor& t : v.toTensorList()) out.push_back(t);
  } else if (v.isList()) {
    for (const c10::IValue& e : v.toListRef()) collect(e, out);
  }
}

struct Mapped {
  at::Tensor device, host;
};

bool is_optional_tensor_list(const c10::IValue& v) {
  auto et = v.toList().elementType();
  return et->kind() == c10::TypeKind::OptionalType &&
         et->castRaw<c10::OptionalType>()->getElementType()->kind() == c10::TypeKind::TensorType;
}

c10::IValue to_host(const c10::IValue& v, std::vector<Mapped>& mapped, bool resizable) {
  auto one = [&](const at::Tensor& t) {
    if (!t.defined() || t.device().type() != kDev) return t;
    at::Tensor h = host_view(t, resizable);
    mapped.push_back({t, h});
    return h;
  };
  if (v.isTensor()) return one(v.toTensor());
  if (v.isTensorList()) {
    c10::List<at::Tensor> list;
    for (const at::Tensor& t : v.toTensorList()) list.push_back(one(t));
    return list;
  }
  if (v.isList() && is_optional_tensor_list(v)) {
    c10::List<std::optional<at::Tensor>> list;
    for (const c10::IValue& e : v.toListRef())
      list.push_back(e.isTensor() ? std::optional<at::Tensor>(one(e.toTensor())) : std::nullopt);
    return list;
  }
  return v;
}

// An op's host result back on the device: the device tensor itself when the op returned its
// (mutated) argument, a device view when it returned a view of one, else adopted memory.
at::Tensor to_device(const at::Tensor& h, const std::vector<Mapped>& mapped, c10::Device device) {
  if (!h.defined() || h.device().type() != c10::kCPU) return h;
  for (const auto& m : mapped) {
    if (!m.host.storage().is_alias_of(h.storage())) continue;
    if (h.unsafeGetTensorImpl() == m.host.unsafeGetTensorImpl()) return m.device;
    auto out = at::detail::make_tensor<c10::TensorImpl>(
        c10::Storage(m.device.storage()), m.device.key_set(), m.device.dtype());
    out.unsafeGetTensorImpl()->set_sizes_and_strides(h.sizes(), h.strides(), h.storage_offset());
    return out;
  }
  return adopt(h, device);
}

const std::unordered_set<std::string> ops_taking_host_indices = {
    "aten::index", "aten::index_put_", "aten::_index_put_impl_", "aten::index_put"};

void fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  counters.fallback_ops++;
  follow_thread_setting();
  const auto& schema = op.schema();
  const auto& args = schema.arguments();
  const size_t n = args.size();
  auto begin = stack->end() - static_cast<std::ptrdiff_t>(n);

  std::vector<at::Tensor> tensors;
  for (auto it = begin; it != stack->end(); ++it) collect(*it, tensors);
  std::optional<c10::Device> device;
  for (const auto& t : tensors)
    if (t.defined() && t.device().type() == kDev) {
      device = t.device();
      break;
    }
  if (!ops_taking_host_indices.count(schema.name())) check_same_device(schema.name().c_str(), tensors);
  if (!device) device = c10::Device(kDev, static_cast<c10::DeviceIndex>(current_device));

  std::vector<Mapped> mapped, written;
  for (size_t i = 0; i < n; ++i) {
    auto& v = *(begin + static_cast<std::ptrdiff_t>(i));
    const auto* alias = args[i].alias_info();
    bool writes = alias && alias->isWrite();
    if (writes) {
      size_t before = mapped.size();
      v = to_host(v, mapped, true);
      written.insert(written.end(), mapped.begin() + static_cast<std::ptrdiff_t>(before), mapped.end());
    } else if (args[i].type()->kind() == c10::TypeKind::OptionalType && v.isNone() &&
               args[i].type()->castRaw<c10::OptionalType>()->getElementType()->kind() ==
                   c10::TypeKind::GeneratorType) {
      v = default_generator(device->index());
    } else {
      v = to_host(v, mapped, false);
    }
  }

  op.callBoxed(stack);

  // Out= arguments that a CPU kernel resized: give the device tensor the new shape and memory.
  for (const auto& w : written) {
    const at::Tensor& d = w.device;
    const at::Tensor& h = w.host;
    if (h.storage().data() != d.storage().data()) {
      resize_(d, h.sizes(), std::nullopt);
      d.unsafeGetTensorImpl()->set_sizes_and_strides(h.sizes(), h.strides(), h.storage_offset());
      grow_storage(d.storage(), h.storage().nbytes());
      if (h.storage().nbytes()) std::memcpy(d.storage().mutable_data(), h.storage().data(), h.storage().nbytes());
    } else if (h.sizes() != d.sizes() || h.strides() != d.strides() || h.storage_offset() != d.storage_offset()) {
      d.unsafeGetTensorImpl()->set_sizes_and_strides(h.sizes(), h.strides(), h.storage_offset());
    }
  }
  std::vector<Mapped> all = written;
  all.insert(all.end(), mapped.begin(), mapped.end());
  const size_t nret = schema.returns().size();
  for (auto it = stack->end() - static_cast<std::ptrdiff_t>(nret); it != stack->end(); ++it) {
    if (it->isTensor()) {
      *it = to_device(it->toTensor(), all, *device);
    } else if (it->isTensorList()) {
      c10::List<at::Tensor> list;
      for (const at::Tensor& t : it->toTensorList()) list.push_back(to_device(t, all, *device));
      *it = list;
    }
  }
}

// Operators with both a CPU kernel and a decomposition (CompositeImplicitAutograd) take the
// decomposition on a backend without a kernel of its own, which rounds differently from the CPU
// kernel. The loader lists them; they get the fallback as their own kernel, so 'mlu' computes
// what the CPU computes.
void run_cpu_kernels_for(const std::vector<std::string>& names) {
  static torch::Library lib(torch::Library::IMPL, "aten", c10::DispatchKey::PrivateUse1, __FILE__, __LINE__);
  for (const auto& name : names) lib.impl(name.c_str(), torch::CppFunction::makeFromBoxedFunction<&fallback>());
}

// ---------------------------------------------------------------------------------------------
// Python-side controls: counters, devices, memory statistics, generators.
pybind11::dict read_counters() {
  pybind11::dict d;
  d["d2h_copies"] = counters.d2h_copies.load();
  d["h2d_copies"] = counters.h2d_copies.load();
  d["d2d_copies"] = counters.d2d_copies.load();
  d["d2h_bytes"] = counters.d2h_bytes.load();
  d["h2d_bytes"] = counters.h2d_bytes.load();
  d["d2d_bytes"] = counters.d2d_bytes.load();
  d["scalar_reads"] = counters.scalar_reads.load();
  d["synchronizes"] = counters.synchronizes.load();
  d["fallback_ops"] = counters.fallback_ops.load();
  return d;
}

void reset_counters() {
  for (auto* c : {&counters.d2h_copies, &counters.h2d_copies, &counters.d2d_copies, &counters.d2h_bytes,
                  &counters.h2d_bytes, &counters.d2d_bytes, &counters.scalar_reads, &counters.synchronizes,
                  &counters.fallback_ops})
    c->store(0);
}

}  // namespace standin

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", &standin::empty_memory_format);
  m.impl("empty_strided", &standin::empty_strided);
  m.impl("_copy_from", &standin::copy_from);
  m.impl("_copy_from_and_resize", &standin::copy_from_and_resize);
  m.impl("resize_", &standin::resize_);
  m.impl("view", &standin::view);
  m.impl("as_strided", &standin::as_strided);
  m.impl("_local_scalar_dense", &standin::local_scalar_dense);
  m.impl("set_.source_Storage_storage_offset", &standin::set_storage);
  m.impl("set_.source_Storage", &standin::set_source_storage);
  m.impl("set_.source_Tensor", &standin::set_source_tensor);
  m.impl("set_", &standin::set_empty);
  m.impl("convolution_overrideable", &standin::convolution);
  m.impl("convolution_backward_overrideable", &standin::convolution_backward);
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&standin::fallback>());
}

// Autocast on 'mlu' follows CUDA's operator lists: matmul-like ops in the low precision type,
// precision-sensitive ones in fp32.
#define STANDIN_LOW(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, lower_precision_fp)
#define STANDIN_FP32(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, fp32)
#define STANDIN_FP32_OPT(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, fp32_set_opt_dtype)
#define STANDIN_PROMOTE(...) KERNEL_PRIVATEUSEONE(__VA_ARGS__, promote)

TORCH_LIBRARY_IMPL(_, AutocastPrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFallthrough());
}

TORCH_LIBRARY_IMPL(aten, AutocastPrivateUse1, m) {
  AT_FORALL_LOWER_PRECISION_FP(STANDIN_LOW)
  AT_FORALL_FP32(STANDIN_FP32)
  AT_FORALL_FP32_SET_OPT_DTYPE(STANDIN_FP32_OPT)
  AT_FORALL_PROMOTE(STANDIN_PROMOTE)
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  static standin::MluHooks hooks;
  at::RegisterPrivateUse1HooksInterface(&hooks);
  m.def("counters", &standin::read_counters);
  m.def("run_cpu_kernels_for", &standin::run_cpu_kernels_for);
  m.def("reset_counters", &standin::reset_counters);
  m.def("note_synchronize", [] { standin::counters.synchronizes++; });
  m.def("device_count", [] { return standin::device_count.load(); });
  m.def("set_active", [](bool on) { standin::active = on; });
  m.def("set_device_count", [](int n) {
    TORCH_CHECK(n >= 1 && n <= standin::kMaxDevices, "stand-in device count must be 1..", standin::kMaxDevices);
    standin::device_count = n;
  });
  m.def("current_device", [] { return standin::current_device; });
  m.def("set_device", [](int64_t i) {
    standin::check_index(i);
    standin::current_device = static_cast<int>(i);
  });
  m.def("memory_allocated", [](int64_t i) {
    standin::check_index(i);
    return standin::counters.allocated[i].load();
  });
  m.def("max_memory_allocated", [](int64_t i) {
    standin::check_index(i);
    return standin::counters.peak[i].load();
  });
  m.def("reset_peak_memory_stats", [](int64_t i) {
    standin::check_index(i);
    standin::counters.peak[i].store(standin::counters.allocated[i].load());
  });
  m.def("default_generator", [](int64_t i) { return standin::default_generator(i); });
}
