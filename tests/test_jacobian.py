"""The Jacobian explorer's model and widget, against torch's own Jacobians and autograd."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import traitlets
from torch_reference import Square

import gradwidget as gw
from gradwidget._jacobian import close, jacobian_matrix, summarize


def reference(f, x):
    """J from torch.autograd.functional, flattened to (m, n) like the explorer's."""
    xs = x if isinstance(x, tuple) else (x,)
    parts = torch.autograd.functional.jacobian(f, xs)
    m = f(*xs).numel()
    return torch.cat([p.reshape(m, -1) for p in parts], dim=1)


def heat_of(w):
    """The heatmap exactly as the browser receives it (float32 bytes + shape)."""
    data = np.frombuffer(bytes(w.heat["data"]), dtype="<f4")
    return data.reshape(w.heat["shape"])


torch.manual_seed(0)
MLP = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
W = torch.randn(4, 3)

CASES = {
    "elementwise": (lambda x: torch.sin(x) * x**2, torch.randn(5)),
    "matmul": (lambda x: W @ x, torch.randn(3)),
    "matrix-in-matrix-out": (lambda x: x @ x.T, torch.randn(2, 3)),
    "softmax": (lambda x: torch.softmax(x, dim=0), torch.randn(6)),
    "mlp": (MLP, torch.randn(3)),
    "tuple-input": (lambda a, b: torch.tanh(a @ b), (torch.randn(2, 3), torch.randn(3, 2))),
    "scalar-in": (lambda x: torch.stack([x, x**2, torch.exp(x)]), torch.tensor(0.3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_J_equals_torch(name):
    f, x = CASES[name]
    w = gw.jacobian(f, x)
    expected = reference(f, x)
    assert w.J.shape == expected.shape
    torch.testing.assert_close(w.J, expected)
    # Browser payload: unsummarised, float32 bytes of the same matrix.
    assert w.blocks == [1, 1] and w.note == ""
    np.testing.assert_allclose(heat_of(w), expected.numpy(), rtol=1e-6, atol=1e-7)
    assert w.vmax == pytest.approx(float(expected.abs().max()))


@pytest.mark.parametrize("name", list(CASES))
def test_jacrev_and_autograd_functional_agree(name):
    f, x = CASES[name]
    leaves, _ = gw._jacobian.as_leaves(x)
    J1, m1, chunk, why = jacobian_matrix(f, leaves, "jacrev")
    J2, m2, _, _ = jacobian_matrix(f, leaves, "autograd")
    assert (m1, m2) == ("jacrev", "autograd")
    assert chunk is None and why == ""
    torch.testing.assert_close(J1, J2)


def test_float64_kept():
    x = torch.randn(4, dtype=torch.float64)
    w = gw.jacobian(lambda t: t.cumsum(0) ** 2, x)
    assert w.J.dtype == torch.float64
    torch.testing.assert_close(w.J, reference(lambda t: t.cumsum(0) ** 2, x))


def test_falls_back_where_jacrev_cannot_run():
    x = torch.randn(4)
    with pytest.raises(RuntimeError, match="setup_context"):
        jacobian_matrix(Square.apply, (x,), "jacrev")
    with pytest.warns(RuntimeWarning, match=r"jacrev cannot run f.*autograd\.functional"):
        w = gw.jacobian(Square.apply, x)
    assert w.method == "autograd"
    torch.testing.assert_close(w.J, torch.diag(2 * x))
    # The reason is kept, shown in the widget's note and in the repr.
    assert "setup_context" in w.fallback_reason
    assert w.fallback_reason.startswith("torch.func.jacrev cannot run f (RuntimeError: ")
    assert w.note.startswith("Not computed with jacrev: torch.func.jacrev cannot run f")
    assert "method=autograd (torch.func.jacrev cannot run f" in repr(w)
    assert gw.jacobian(torch.exp, x).fallback_reason == ""


@pytest.mark.parametrize("name", list(CASES))
def test_vjp_two_ways_agree(name):
    f, x = CASES[name]
    w = gw.jacobian(f, x)
    m = w.J.shape[0]
    for v in (torch.ones(m), torch.randn(m), torch.linspace(-2, 3, m)):
        by_matmul = w.vjp(v)
        by_backward = w.vjp(v, method="backward")
        torch.testing.assert_close(by_matmul, v @ reference(f, x))
        torch.testing.assert_close(by_backward, by_matmul, rtol=1e-5, atol=1e-6)
        assert close(by_matmul, by_backward)[0]
    # v may be shaped like the output, too.
    y_shape = tuple(w.out_shape)
    torch.testing.assert_close(w.vjp(torch.ones(y_shape)), w.vjp(torch.ones(m)))


def test_widget_reports_agreement_for_each_v():
    f, x = CASES["mlp"]
    w = gw.jacobian(f, x)
    w.v = [0.5, -2.0]
    view = w.vjp_view
    assert view["agree"] is True and view["max_diff"] < 1e-5
    expected = (torch.tensor([0.5, -2.0]) @ w.J).numpy()
    for key in ("matmul", "backward", "grad"):
        got = np.frombuffer(bytes(view[key]["data"]), dtype="<f4")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_one_hot_v_picks_a_row():
    f, x = CASES["softmax"]
    w = gw.jacobian(f, x)
    for i in range(w.J.shape[0]):
        onehot = [0.0] * w.J.shape[0]
        onehot[i] = 1.0
        w.v = onehot
        torch.testing.assert_close(w.vjp(), w.J[i])
        # ... which is the gradient of that one output.
        xx = x.clone().requires_grad_(True)
        f(xx)[i].backward()
        torch.testing.assert_close(w.grad, xx.grad)


def test_scalar_output_is_one_row_equal_to_grad():
    x = torch.randn(3, 2)

    def loss(t):
        return (t.tanh() ** 2).sum()

    w = gw.jacobian(loss, x)
    assert w.J.shape == (1, 6)
    assert w.out_shape == []
    xx = x.clone().requires_grad_(True)
    loss(xx).backward()
    torch.testing.assert_close(w.J[0], xx.grad.reshape(-1))
    torch.testing.assert_close(w.split(w.grad), xx.grad)
    assert x.grad is None  # the caller's tensor is never touched


def test_x_without_requires_grad_is_handled_and_not_mutated():
    x = torch.randn(3)
    assert not x.requires_grad
    w = gw.jacobian(torch.exp, x)
    assert w.x.requires_grad and w.x.is_leaf and w.x is not x
    assert not x.requires_grad and x.grad is None
    torch.testing.assert_close(w.J, torch.diag(torch.exp(x)))
    # An x that already requires grad works and keeps no link to the caller.
    x2 = torch.randn(3, requires_grad=True)
    w2 = gw.jacobian(torch.exp, x2)
    w2.backward()
    assert x2.grad is None


def test_accumulation_doubles_then_zero_grad_clears():
    f, x = CASES["mlp"]
    w = gw.jacobian(f, x, v=[1.0, -1.0])
    once = w.vjp()
    torch.testing.assert_close(w.grad, once)  # default: x.grad is exactly vᵀJ
    assert w.backward_calls == 1
    w.zero_grad()
    assert w.backward_calls == 0 and w.x.grad is None
    assert torch.count_nonzero(w.grad) == 0
    assert w.vjp_view["calls"] == 0

    w.backward(times=2)
    torch.testing.assert_close(w.grad, 2 * once)
    assert w.vjp_view["ratio"] == pytest.approx(2.0)

    # The toggle: each change of v calls backward twice without zeroing.
    w.zero_grad()
    w.accumulate = True
    torch.testing.assert_close(w.grad, 2 * once)
    assert w.backward_calls == 2
    w.v = [2.0, -2.0]  # a new v piles on: 2·(vᵀJ) + 2·(2vᵀJ)
    torch.testing.assert_close(w.grad, 6 * once, rtol=1e-5, atol=1e-6)
    assert w.vjp_view["calls"] == 4 and w.vjp_view["ratio"] == pytest.approx(3.0)
    # The two-ways check is independent of what accumulated.
    assert w.vjp_view["agree"] is True

    w.accumulate = False
    torch.testing.assert_close(w.grad, w.vjp())
    assert w.backward_calls == 1


def test_parameters_of_f_are_left_alone():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    w = gw.jacobian(model, torch.randn(3))
    w.v = [1.0, 2.0]
    w.backward(times=3)
    w.vjp(method="backward")
    assert all(p.grad is None for p in model.parameters())


def test_front_end_messages_zero_grad_and_backward():
    f, x = CASES["matmul"]
    w = gw.jacobian(f, x)
    w._on_msg(w, {"event": "backward"}, [])
    torch.testing.assert_close(w.grad, 2 * w.vjp())
    w._on_msg(w, {"event": "zero_grad"}, [])
    assert w.x.grad is None and w.vjp_view["calls"] == 0
    w._on_msg(w, {"event": "unknown"}, [])  # ignored


# ---- bad input ----------------------------------------------------------------------------------


def test_error_f_returns_non_tensor():
    with pytest.raises(TypeError, match=r"must return a torch\.Tensor.*returned float"):
        gw.jacobian(lambda x: x.sum().item(), torch.randn(3))
    with pytest.raises(TypeError, match="returned tuple"):
        gw.jacobian(lambda x: (x, x), torch.randn(3))


def test_error_integer_input_and_output():
    with pytest.raises(TypeError, match=r"torch.int64.*floating-point.*\.float\(\)"):
        gw.jacobian(lambda x: x * 2, torch.arange(3))
    with pytest.raises(TypeError, match="not differentiable"):
        gw.jacobian(lambda x: torch.argmax(x).reshape(1), torch.randn(3))
    with pytest.raises(TypeError, match="not differentiable"):
        gw.jacobian(lambda x: x > 0, torch.randn(3))


def test_error_graph_cut():
    with pytest.raises(ValueError, match=r"no grad_fn.*\.detach\(\)"):
        gw.jacobian(lambda x: x.detach() * 2, torch.randn(3))
    with pytest.raises(ValueError, match="no grad_fn"):
        gw.jacobian(lambda x: torch.tensor(x.tolist()), torch.randn(3))
    with pytest.raises(ValueError, match=r"no grad_fn.*non-differentiable op \(histc"):
        gw.jacobian(lambda x: torch.histc(x, bins=4), torch.randn(5))


def test_error_op_without_derivative():
    with pytest.raises(ValueError, match=r"cannot differentiate.*derivative for 'zeta'"):
        gw.jacobian(lambda x: torch.special.zeta(x, torch.tensor(2.0)), torch.rand(3) + 1.5)


def test_error_other_bad_input():
    with pytest.raises(TypeError, match="callable"):
        gw.jacobian("sin", torch.randn(3))
    with pytest.raises(TypeError, match=r"x\[1\] must be a torch.Tensor"):
        gw.jacobian(lambda a, b: a + b, (torch.randn(2), [1.0, 2.0]))
    with pytest.raises(ValueError, match="empty"):
        gw.jacobian(torch.exp, torch.randn(0))
    with pytest.raises(ValueError, match="max_entries"):
        gw.jacobian(torch.exp, torch.randn(100), max_entries=1000)
    with pytest.raises(ValueError, match="method"):
        gw.jacobian(torch.exp, torch.randn(3), method="fd")
    w = gw.jacobian(torch.exp, torch.randn(3))
    with pytest.raises(traitlets.TraitError, match="one entry per output component"):
        w.v = [1.0, 2.0]
    with pytest.raises(traitlets.TraitError, match="non-finite"):
        w.v = [1.0, float("nan"), 0.0]
    assert w.v == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="one entry per output component"):
        w.vjp([1.0])


def test_error_v_not_numbers():
    w = gw.jacobian(lambda x: x @ x.T, torch.randn(2, 3))  # f(x) is 2 × 2: m = 4
    expected = r"v must be numbers, one weight per output component of f \(4 of them\).*\(2, 2\)"
    for bad in ("abc", b"ab", {"a": 1}, [1.0, "x", 2.0, 3.0], object(), [[1.0, 2.0], [3.0]]):
        with pytest.raises(TypeError, match=expected):
            w.vjp(bad)
        with pytest.raises(TypeError, match=expected):
            w.backward(bad)
        with pytest.raises(traitlets.TraitError):  # traitlets' own type check, or ours
            w.v = bad
    with pytest.raises(TypeError, match="got the str 'abc'"):
        w.vjp("abc")
    with pytest.raises(TypeError, match=r"\(4 of them\).*f\(x\) \(4,\); got the str '1111'"):
        gw.jacobian(torch.exp, torch.randn(4), v="1111")
    # Shaped like f(x), flat, numpy, tensor: all fine.
    for good in ([[1.0, 0.0], [0.0, 1.0]], [1, 0, 0, 1], np.eye(2), torch.eye(2)):
        torch.testing.assert_close(w.vjp(good), w.J[0] + w.J[3])
    with pytest.raises(ValueError, match="'matmul' or 'backward'"):
        w.vjp(method="both")


def test_f_exceptions_propagate_unchanged():
    def bad(x):
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        gw.jacobian(bad, torch.randn(2))


# ---- large J ------------------------------------------------------------------------------------


def test_large_J_is_summarised_with_a_note():
    x = torch.randn(1100)
    w = gw.jacobian(torch.tanh, x)  # 1,210,000 entries
    assert w.J.shape == (1100, 1100)
    rows, cols = w.heat["shape"]
    assert rows <= 512 and cols <= 512
    assert w.blocks == [3, 3]
    assert "1,210,000 entries" in w.note and "block means" in w.note
    assert len(w.heat["data"]) == rows * cols * 4  # binary float32, nothing else
    # Block means: the first 3×3 block holds three diagonal entries.
    d = 1 - torch.tanh(x) ** 2
    assert heat_of(w)[0, 0] == pytest.approx(float(d[:3].sum() / 9), rel=1e-5)
    # vᵀJ strips are summarised the same way as the columns.
    assert w.vjp_view["matmul"]["shape"] == [cols]
    assert w.vjp_view["agree"] is True
    assert "J 1100×1100" in repr(w)


def test_summarize_blocks_exact_and_ragged():
    J = torch.arange(35.0).reshape(5, 7)
    same, blocks = summarize(J, 5, 7)
    assert blocks == (1, 1) and same is J
    small, (rb, cb) = summarize(J, 2, 3)
    assert (rb, cb) == (3, 3) and small.shape == (2, 3)
    assert small[0, 0] == J[:3, :3].mean()
    assert small[1, 2] == J[3:, 6:].mean()  # ragged corner: mean over real entries only
    peak, _ = summarize(torch.diag(torch.tensor([1.0, -5.0, 2.0, 0.5])), 2, 2, "absmax")
    assert peak.tolist() == [[-5.0, 0.0], [0.0, 2.0]]
    with pytest.raises(ValueError, match="reduce"):
        summarize(J, 2, 2, "median")


def test_max_cells_and_absmax_keep_a_diagonal_visible():
    w = gw.jacobian(torch.sin, torch.zeros(64), max_cells=16, reduce="absmax")
    assert w.heat["shape"] == [16, 16]
    assert np.allclose(np.diag(heat_of(w)), 1.0)
    assert "largest-magnitude" in w.note
    # Ragged blocks: the vᵀJ strips always line up with the heatmap's columns.
    for n, cells in ((10, 3), (13, 5), (100, 30), (1001, 512)):
        w = gw.jacobian(torch.sin, torch.zeros(n), max_cells=cells)
        assert w.vjp_view["matmul"]["shape"] == [w.heat["shape"][1]]
        assert w.heat["shape"][1] <= cells


# ---- cost guards: memory (chunked jacrev) and time (refusal) -------------------------------------


def outer_row_sums(t):
    """y_i = t_i · Σt, so J = Σt · I + t[:, None]; its backward makes n × n per output row."""
    return (t[:, None] * t[None, :]).sum(1)


def test_wide_intermediate_runs_jacrev_in_chunks():
    # The case at n=2000 needs ~32 GB unchunked (n × n per row, n rows): with
    # n=600 and a 64 MB budget the vmapped batch (~2.9 MB per row) must be chunked.
    x = torch.randn(600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback, so no warning
        # ...except ipywidgets 8.1.0's own (traitlets' get_metadata, on every widget made),
        # seen in the dependency-floor run (make test-floors).
        warnings.filterwarnings("ignore", "Deprecated in traitlets 4.1", DeprecationWarning)
        w = gw.jacobian(outer_row_sums, x, memory_budget=64 << 20, max_seconds=None)
    assert w.method == "jacrev" and w.fallback_reason == ""
    assert w.chunk_size is not None and 1 <= w.chunk_size < 600
    assert w.chunk_size * 600 * 600 * 4 <= 64 << 20
    expected = torch.diag(x.sum().expand(600)) + x[:, None]  # ∂/∂t_j Σ_k t_i t_k
    torch.testing.assert_close(w.J, expected)
    # Within budget: one batch.
    small = gw.jacobian(outer_row_sums, torch.randn(50))
    assert small.chunk_size is None


def test_jacrev_out_of_memory_retries_with_smaller_chunks(monkeypatch):
    calls = []
    real = torch.func.jacrev

    def jacrev_with_little_memory(f, argnums=0, *, chunk_size=None):
        calls.append(chunk_size)
        if chunk_size is None or chunk_size > 2:
            raise RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                "memory: you tried to allocate 32000000000 bytes."
            )
        return real(f, argnums, chunk_size=chunk_size)

    monkeypatch.setattr(torch.func, "jacrev", jacrev_with_little_memory)
    x = torch.randn(100)
    w = gw.jacobian(outer_row_sums, x)
    assert calls == [None, 12, 1] and w.chunk_size == 1 and w.method == "jacrev"
    torch.testing.assert_close(w.J, reference(outer_row_sums, x))


def test_fallback_after_out_of_memory_says_why(monkeypatch):
    def jacrev_without_memory(f, argnums=0, *, chunk_size=None):
        raise torch.OutOfMemoryError("out of memory: tried to allocate 32.00 GiB")

    monkeypatch.setattr(torch.func, "jacrev", jacrev_without_memory)
    x = torch.randn(10)
    with pytest.warns(RuntimeWarning, match=r"ran out of memory even one row at a time"):
        w = gw.jacobian(outer_row_sums, x)
    assert w.method == "autograd"
    assert "out of memory" in w.fallback_reason and "32.00 GiB" in w.fallback_reason
    assert "Not computed with jacrev" in w.note
    torch.testing.assert_close(w.J, reference(outer_row_sums, x))
    with pytest.raises(torch.OutOfMemoryError):
        jacobian_matrix(outer_row_sums, (x,), "jacrev")


def test_refuses_clearly_when_backward_passes_would_take_too_long():
    # Deterministic: any real forward + backward takes more than 1e-9 s per pass.
    x = torch.randn(300)
    with pytest.raises(ValueError) as info:
        gw.jacobian(outer_row_sums, x, max_seconds=1e-9)
    msg = str(info.value)
    assert "J (300 × 300) needs 300 backward passes of f" in msg
    assert "over max_seconds=1e-09" in msg
    assert "smaller x" in msg and "max_seconds (None disables" in msg
    for method in ("jacrev", "autograd"):
        with pytest.raises(ValueError, match="max_seconds"):
            jacobian_matrix(outer_row_sums, (x,), method, max_seconds=1e-9)
    # None disables the check.
    assert gw.jacobian(outer_row_sums, x, max_seconds=None).J.shape == (300, 300)


# ---- headless output ----------------------------------------------------------------------------


def test_repr_is_cheap_and_stable():
    f, x = CASES["tuple-input"]
    w = gw.jacobian(f, x)
    assert repr(w) == (
        "<gradwidget.JacobianWidget: J 4×12, y (2, 2) ← a (2, 3), b (3, 2), method=jacrev>"
    )
    w2 = gw.jacobian(f, x, input_names=["W", "v"], output_name="z")
    assert "z (2, 2) ← W (2, 3), v (3, 2)" in repr(w2)


def test_plot_and_static_export(tmp_path):
    pytest.importorskip("matplotlib")
    f, x = CASES["tuple-input"]
    w = gw.jacobian(f, x)
    fig = w.plot()
    assert len(fig.axes) == 3  # heatmap, vᵀJ strip, colorbar
    assert fig._repr_png_().startswith(b"\x89PNG")
    png, svg = w.save(tmp_path / "J.png"), w.save(tmp_path / "J.svg", show_vjp=False)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "<svg" in svg.read_text()
    assert w.to_image("png").data.startswith(b"\x89PNG")
    assert "<svg" in w.to_image("svg").data
    with pytest.raises(ValueError, match="format"):
        w.to_image("gif")
    big = gw.jacobian(torch.tanh, torch.randn(1100))
    assert "block means" in big.plot().axes[0].get_title()


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_mpl(name, *args, **kw):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kw)

    w = gw.jacobian(torch.exp, torch.randn(2))
    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(ImportError, match=r"pip install matplotlib"):
        w.plot()


def test_input_names_default_to_f_parameters():
    w = gw.jacobian(lambda weight, bias: weight.sum(0) + bias, (torch.randn(2, 3), torch.randn(3)))
    assert w.in_names == ["weight", "bias"]
    assert gw.jacobian(MLP, torch.randn(3)).in_names == ["x"]
    assert math.prod(w.in_shapes[0]) + math.prod(w.in_shapes[1]) == w.J.shape[1]
