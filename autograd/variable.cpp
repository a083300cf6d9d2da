#include "autograd/variable.h"

#include <unordered_map>
#include <vector>

#include "autograd/ops.h"
#include "core/parallel.h"

namespace qforge::autograd {

namespace {
thread_local bool tl_grad_enabled = true;

// Nodes whose graph has been freed by a backward without retain_graph.
void mark_freed(Node& n) {
  n.backward = [name = n.name](const Tensor&, GradSink&) {
    QF_THROW(Error) << "backward through the graph a second time (op '" << name
                    << "'): its buffers were freed; pass retain_graph=true to the first backward";
  };
  n.inputs.clear();
}
}  // namespace

bool grad_enabled() { return tl_grad_enabled; }
NoGradGuard::NoGradGuard() : prev_(tl_grad_enabled) { tl_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { tl_grad_enabled = prev_; }

bool any_requires_grad(std::initializer_list<const Variable*> vs) {
  if (!tl_grad_enabled) return false;
  for (const Variable* v : vs)
    if (v && v->defined() && v->requires_grad()) return true;
  return false;
}

Node::~Node() {
  std::vector<std::shared_ptr<Node>> stack = std::move(inputs);
  while (!stack.empty()) {
    std::shared_ptr<Node> n = std::move(stack.back());
    stack.pop_back();
    // Only the last owner dismantles a node; its inputs join the stack.
    if (n && n.use_count() == 1) {
      for (auto& in : n->inputs) stack.push_back(std::move(in));
      n->inputs.clear();
      n->backward = nullptr;
    }
  }
}

void Node::accumulate(Tensor g) {
  QF_CHECK_SHAPE(g.shape() == shape) << "gradient of shape " << g.shape_str() << " for a "
                                     << qforge::shape_str(shape) << " value (op '" << name << "')";
  QF_CHECK_DTYPE(g.dtype() == dtype) << "gradient of dtype " << dtype_name(g.dtype()) << " for a "
                                     << dtype_name(dtype) << " value (op '" << name << "')";
  if (!grad.defined()) {
    grad = std::move(g);
    return;
  }
  // grad + g in one parallel pass, written into whichever of the two nothing
  // else shares (a gradient may be another node's tensor, as add's is), else
  // into a new tensor.
  Tensor dst = grad.is_unique() ? grad : g.is_unique() ? g : Tensor::empty(grad.shape(), grad.dtype());
  dispatch_floating(grad.dtype(), "accumulate grad", [&](auto tag) {
    using T = decltype(tag);
    const T *a = grad.data<T>(), *b = g.data<T>();
    T* d = dst.data<T>();
    parallel_for(0, grad.numel(), 1 << 15, [&](int64_t s, int64_t e) {
      for (int64_t i = s; i < e; ++i) d[i] = a[i] + b[i];
    });
  });
  grad = std::move(dst);
}

void GradSink::add(size_t i, Tensor grad) {
  QF_DCHECK(i < inputs_.size());
  if (inputs_[i]) inputs_[i]->accumulate(std::move(grad));
}

Variable::Variable(Tensor value, bool requires_grad) : impl_(std::make_shared<Impl>()) {
  QF_CHECK(value.defined()) << "Variable from an undefined tensor";
  impl_->value = std::move(value);
  set_requires_grad(requires_grad);
}

const Tensor& Variable::value() const {
  QF_CHECK(impl_) << "use of an undefined Variable";
  return impl_->value;
}
Tensor& Variable::value() {
  QF_CHECK(impl_) << "use of an undefined Variable";
  return impl_->value;
}

void Variable::set_value(const Tensor& v) {
  QF_CHECK_SHAPE(v.shape() == value().shape()) << "set_value: " << v.desc() << " for " << value().desc();
  QF_CHECK_DTYPE(v.dtype() == value().dtype()) << "set_value: " << v.desc() << " for " << value().desc();
  impl_->value = v;
}

bool Variable::requires_grad() const { return impl_ && impl_->requires_grad; }

bool Variable::is_leaf() const { return !impl_ || !impl_->node || impl_->node->is_leaf(); }

void Variable::set_requires_grad(bool r) {
  QF_CHECK(impl_) << "set_requires_grad on an undefined Variable";
  QF_CHECK(is_leaf()) << "set_requires_grad on a non-leaf variable; use detach() first";
  if (r) QF_CHECK_DTYPE(is_floating(impl_->value.dtype()))
      << "only floating tensors can require grad, got " << impl_->value.desc();
  impl_->requires_grad = r;
  if (r && !impl_->node) {
    impl_->node = std::make_shared<Node>();
    impl_->node->shape = impl_->value.shape();
    impl_->node->dtype = impl_->value.dtype();
  }
  if (!r) impl_->node.reset();
}

const Tensor& Variable::grad() const {
  static const Tensor kUndefined;
  if (!impl_ || !impl_->node) return kUndefined;
  return impl_->node->grad;
}

bool Variable::has_grad() const { return grad().defined(); }

void Variable::zero_grad() {
  if (impl_ && impl_->node) impl_->node->grad = Tensor();
}

void Variable::set_grad(const Tensor& g) {
  QF_CHECK(impl_ && impl_->node) << "set_grad on a variable that does not require grad";
  QF_CHECK_SHAPE(g.shape() == value().shape()) << "set_grad: " << g.desc() << " for " << value().desc();
  impl_->node->grad = g;
}

const std::shared_ptr<Node>& Variable::node() const {
  static const std::shared_ptr<Node> kNull;
  return impl_ ? impl_->node : kNull;
}

Variable Variable::detach() const { return Variable(value(), false); }

Variable Variable::make(Tensor value, const std::vector<const Variable*>& inputs, const char* name,
                        BackwardFn backward) {
  Variable out;
  out.impl_ = std::make_shared<Impl>();
  out.impl_->value = std::move(value);
  if (!tl_grad_enabled) return out;
  std::vector<std::shared_ptr<Node>> nodes;
  nodes.reserve(inputs.size());
  bool any = false;
  for (const Variable* v : inputs) {
    if (v && v->defined() && v->requires_grad()) {
      nodes.push_back(v->node());
      any = true;
    } else {
      nodes.push_back(nullptr);
    }
  }
  if (!any) return out;
  auto node = std::make_shared<Node>();
  node->backward = std::move(backward);
  node->inputs = std::move(nodes);
  node->shape = out.impl_->value.shape();
  node->dtype = out.impl_->value.dtype();
  node->name = name;
  out.impl_->node = std::move(node);
  out.impl_->requires_grad = true;
  return out;
}

void Variable::backward(bool retain_graph) {
  QF_CHECK_SHAPE(numel() == 1) << "backward() without a gradient needs a scalar, got " << value().desc()
                               << "; pass the output gradient explicitly";
  backward(Tensor::ones(shape(), dtype()), retain_graph);
}

void Variable::backward(const Tensor& grad_out, bool retain_graph) {
  QF_CHECK(requires_grad()) << "backward on a variable that does not require grad";
  QF_CHECK_SHAPE(grad_out.shape() == shape())
      << "backward: seed gradient " << grad_out.desc() << " for a " << value().desc() << " output";
  Node* root = impl_->node.get();

  // Count, for every reachable node, how many consumers will send it a gradient.
  std::unordered_map<Node*, int> pending;
  std::vector<Node*> stack{root};
  pending[root] = 0;
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    for (const auto& in : n->inputs) {
      if (!in) continue;
      auto [it, inserted] = pending.try_emplace(in.get(), 0);
      ++it->second;
      if (inserted) stack.push_back(in.get());
    }
  }

  root->accumulate(grad_out.clone());
  std::vector<Node*> ready{root};
  // Keep nodes alive while we walk, even if freeing edges drops the last owner.
  std::vector<std::shared_ptr<Node>> keep;
  while (!ready.empty()) {
    Node* n = ready.back();
    ready.pop_back();
    if (n->is_leaf()) continue;
    Tensor g = std::move(n->grad);
    n->grad = Tensor();
    if (g.defined()) {
      GradSink sink(n->inputs);
      n->backward(g, sink);
    }
    for (const auto& in : n->inputs) {
      if (!in) continue;
      if (--pending[in.get()] == 0) ready.push_back(in.get());
    }
    if (!retain_graph) {
      for (auto& in : n->inputs)
        if (in) keep.push_back(in);
      mark_freed(*n);
    }
  }
}

}  // namespace qforge::autograd
