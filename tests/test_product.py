"""Theorem 1's matrices, the input Jacobian, and the corrections to the
manuscript "Explicit Matrix Gradient Expression for Residual Network".

Each correction test evaluates the corrected formula and the printed one
on the same network and shows that only the corrected one equals autograd.
"""

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import reference
import torch

import resgrad

ACTIVATIONS = list(resgrad.ACTIVATIONS)
SHORTCUTS = ("learned", "identity", "none")
MODES = ("reverse", "forward", "product", "auto")
AGREE = 1e-12
# A wrong formula on random weights is off by order one; 1e-2 leaves room.
DISAGREE = 1e-2


def _matrices(model, x):
    """Return ``[(Q, D, D_hat), ...]`` of every block as NumPy arrays."""
    return [
        tuple(reference.to_numpy(m) for m in mats)
        for mats in resgrad.theorem_matrices(model, x)
    ]


def _chain(*factors):
    """Multiply per-sample matrices ``(n, ., .)`` from left to right."""
    result = factors[0]
    for factor in factors[1:]:
        result = result @ factor
    return result


def _transpose_times(matrix, vector):
    """Return ``matrix[i]^T vector[i]`` per sample, shape ``(n, cols)``."""
    return np.einsum("nrc,nr->nc", matrix, vector)


def _p_matrices(mats):
    """Return ``P^l = D^L Q^L D^{L-1} ... Q^{l+1} D^l`` for ``l = 1..L``."""
    P = [mats[-1][1]]
    for index in range(len(mats) - 2, -1, -1):
        P.append(P[-1] @ mats[index + 1][0] @ mats[index][1])
    return P[::-1]


def _equal_width_model(depth=3, activation="tanh", output="tanh", bias=False, seed=0):
    """Return a network whose widths ``p_l`` are all 4 (hidden widths 6, 9, 5),
    so that the manuscript's misprinted products have matching shapes."""
    model = resgrad.ResidualMLP.init(
        [4] * (depth + 1),
        [6, 9, 5, 8, 2, 7][:depth],
        activation=activation,
        output_activation=output,
        shortcut="learned",
        bias=bias,
        seed=seed,
    )
    return model


# theorem_matrices.


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_q_equals_block_jacobian(activation, shortcut):
    """``Q^l = W2 D_hat^l W1 + W3`` is ``dz^l/da^{l-1}`` at every sample."""
    model = reference.random_model(
        3, activation, shortcut, output_activation=activation
    )
    x, _ = reference.random_batch(model, 5)
    expected = reference.autograd_block_jacobians(model, x)
    for index, (Q, _, _) in enumerate(_matrices(model, x)):
        p_out, p_in = model.sizes[index + 1], model.sizes[index]
        assert Q.shape == (5, p_out, p_in)
        assert reference.relative_error(Q, expected[index]) <= AGREE, index


def _assert_diagonal(matrix, values, name):
    n, k = values.shape
    assert matrix.shape == (n, k, k), name
    off_diagonal = matrix * (1 - np.eye(k))
    assert not np.any(off_diagonal), f"{name} has off-diagonal entries"
    diagonal = np.einsum("nkk->nk", matrix)
    assert reference.relative_error(diagonal, values) <= AGREE, name


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["identity", "activation"])
def test_d_and_d_hat_are_diagonal_derivatives(activation, output):
    """``D_hat^l = diag(g'(u^l))``, ``D^l = diag(g'(z^l))`` for ``l < L`` and
    ``D^L = diag(g_out'(z^L))``, each equal to autograd's derivative."""
    output = activation if output == "activation" else output
    model = reference.random_model(
        3, activation, "learned", output_activation=output, post_activation="softplus"
    )
    x, _ = reference.random_batch(model, 6)
    traces, _ = model.trace(x)
    for index, (trace, (_, D, D_hat)) in enumerate(zip(traces, _matrices(model, x))):
        outer = output if index == model.depth - 1 else "softplus"
        _assert_diagonal(
            D_hat, reference.autograd_derivative(activation, trace.u), f"D_hat^{index}"
        )
        _assert_diagonal(D, reference.autograd_derivative(outer, trace.z), f"D^{index}")


def test_d_L_is_identity_for_identity_output():
    model = reference.random_model(2, "sigmoid", "none")
    x, _ = reference.random_batch(model, 4)
    D_L = _matrices(model, x)[-1][1]
    assert np.array_equal(D_L, np.broadcast_to(np.eye(3), (4, 3, 3)))


# input_jacobian.


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_jacobian_matches_jacrev(mode, activation, shortcut):
    model = reference.random_model(
        4, activation, shortcut, output_activation=activation
    )
    x, _ = reference.random_batch(model, 5)
    J = resgrad.input_jacobian(model, x, mode)
    assert J.shape == (5, model.n_classes, model.sizes[0])
    assert reference.relative_error(J, reference.autograd_jacobian(model, x)) <= AGREE


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("classes", [2, 9])
def test_jacobian_for_more_or_fewer_classes_than_inputs(mode, classes):
    """``auto`` picks reverse for ``p_L <= p_0`` and forward otherwise."""
    model = reference.random_model(2, "tanh", "learned", classes=classes)
    x, _ = reference.random_batch(model, 3)
    J = resgrad.input_jacobian(model, x, mode)
    assert J.shape == (3, classes, 5)
    assert reference.relative_error(J, reference.autograd_jacobian(model, x)) <= AGREE


@pytest.mark.parametrize("mode", MODES)
def test_jacobian_rows_are_score_gradients(mode):
    """Row ``r`` of ``J`` is ``dY/dx`` for the score ``Y = z^L_r``, eq. (5)."""
    model = reference.random_model(3, "elu", "none", output_activation="elu")
    x, _ = reference.random_batch(model, 6)
    J = resgrad.input_jacobian(model, x, mode)
    for r in range(model.n_classes):
        _, dx = resgrad.input_gradient(model, x, np.full(6, r), loss="score")
        assert reference.relative_error(J[:, r, :], dx) <= AGREE, r


def test_jacobian_of_empty_batch_is_empty():
    model = reference.random_model(2, "relu", "learned")
    for mode in MODES:
        J = resgrad.input_jacobian(model, np.zeros((0, 5)), mode)
        assert J.shape == (0, 3, 5), mode


def test_unknown_jacobian_mode_raises():
    model = reference.random_model(1, "relu", "learned")
    x, _ = reference.random_batch(model, 2)
    with pytest.raises(
        ValueError, match="Unknown mode 'sideways'; expected one of: auto"
    ):
        resgrad.input_jacobian(model, x, "sideways")


@pytest.mark.parametrize("function", [resgrad.theorem_matrices, resgrad.input_jacobian])
def test_non_model_raises_type_error(function):
    with pytest.raises(TypeError, match="Expected a ResidualMLP, got dict"):
        function({"W1": np.eye(2)}, np.zeros((1, 2)))


def test_jacobian_of_foreign_x_raises():
    model = reference.random_model(1, "relu", "learned")
    x, _ = reference.random_batch(model, 2)
    with pytest.raises(TypeError, match="numpy.*torch|torch.*numpy"):
        resgrad.input_jacobian(model, torch.asarray(x))


# Theorem 1 as printed, evaluated from theorem_matrices.


@pytest.mark.parametrize("shortcut", SHORTCUTS)
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_equations_6_to_8_match_autograd(shortcut, loss):
    """``dY/dW1 = (P^l W2 D_hat^l)^T dY/da^L (a^{l-1})^T``, ``dY/dW2`` and
    ``dY/dW3`` with ``(P^l)^T dY/da^L``, summed over samples."""
    model = reference.random_model(
        3, "sigmoid", shortcut, bias=False, output_activation="sigmoid"
    )
    x, y = reference.random_batch(model, 5)
    dY_da, _, _ = reference.autograd_errors(model, x, y, loss)
    expected = reference.autograd_gradients(model, x, y, loss, "sum")
    traces, _ = model.trace(x)
    mats = _matrices(model, x)
    for index, (P, trace, block) in enumerate(
        zip(_p_matrices(mats), traces, model.blocks)
    ):
        a_prev, h = trace.a_prev, trace.h
        hidden = _transpose_times(P @ block.W2 @ mats[index][2], dY_da)
        error = _transpose_times(P, dY_da)
        prefix = f"blocks.{index}."
        actual = {"W1": hidden.T @ a_prev, "W2": error.T @ h}
        if shortcut == "learned":
            actual["W3"] = error.T @ a_prev
        for name, value in actual.items():
            error_size = reference.relative_error(value, expected[prefix + name])
            assert error_size <= AGREE, prefix + name


# Corrections to the manuscript.


def test_block_reads_previous_output():
    """Eq. (3): block ``l`` reads ``a^{l-1}``, so ``z^L = B_L(a^{L-1})``.

    The printed ``z^l = B_l(a^l)`` would feed a block its own output.
    """
    model = _equal_width_model(output="identity", bias=True)
    x, _ = reference.random_batch(model, 5)
    traces, _ = model.trace(x)
    params = {k: v.detach() for k, v in reference.torch_parameters(model).items()}
    assert np.array_equal(traces[0].a_prev, x)
    for index in range(1, model.depth):
        a = np.tanh(traces[index - 1].z)
        assert np.array_equal(traces[index].a_prev, a), index
    for index, trace in enumerate(traces):
        _, z = reference.torch_block(model, params, index, torch.asarray(trace.a_prev))
        assert reference.relative_error(trace.z, z) <= AGREE, index
        a_own = np.tanh(trace.z) if index < model.depth - 1 else trace.z
        _, z_printed = reference.torch_block(model, params, index, torch.asarray(a_own))
        assert reference.relative_error(z_printed, trace.z) > DISAGREE, index


def test_w1_shape_is_hidden_by_input():
    """Theorem 1 prints ``W1`` as ``(p_l, p_{l-1})``, but it is ``(q_l, p_{l-1})``."""
    rng = np.random.default_rng(0)
    p_in, q, p_out = 5, 7, 3
    block = resgrad.Block(
        W1=rng.standard_normal((q, p_in)),
        W2=rng.standard_normal((p_out, q)),
        W3=rng.standard_normal((p_out, p_in)),
    )
    assert block.W1.shape == (q, p_in)
    with pytest.raises(ValueError, match=r"Expected W2 to have 3 columns.*W1 \(3, 5\)"):
        resgrad.Block(
            W1=rng.standard_normal((p_out, p_in)),
            W2=rng.standard_normal((p_out, q)),
            W3=rng.standard_normal((p_out, p_in)),
        )


def test_w2_shape_is_output_by_hidden():
    """Section 2 prints ``W2`` as ``(q_l, p_{l-1})``, but it is ``(p_l, q_l)``,
    and the block output then has width ``p_l``."""
    rng = np.random.default_rng(1)
    p_in, q, p_out = 5, 7, 3
    block = resgrad.Block(
        W1=rng.standard_normal((q, p_in)),
        W2=rng.standard_normal((p_out, q)),
        W3=rng.standard_normal((p_out, p_in)),
    )
    model = resgrad.ResidualMLP([block], activation="tanh")
    assert model(rng.standard_normal((2, p_in))).shape == (2, p_out)
    with pytest.raises(
        ValueError, match=r"Expected W2 to have 7 columns.*got W2 of shape \(7, 5\)"
    ):
        resgrad.Block(
            W1=rng.standard_normal((q, p_in)),
            W2=rng.standard_normal((q, p_in)),
            W3=rng.standard_normal((p_out, p_in)),
        )


def _equation_4(mats, dY_da, include_D_L=True):
    """``(D^L Q^L D^{L-1} ... D^1 Q^1)^T dY/da^L`` per sample."""
    Q_L, D_L, _ = mats[-1]
    leading = [D_L, Q_L] if include_D_L else [Q_L]
    rest = [m for Q, D, _ in mats[-2::-1] for m in (D, Q)]
    return _transpose_times(_chain(*leading, *rest), dY_da)


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_equation_4_needs_d_L_for_output_activation(loss):
    """With ``Y = f(g(z^L))``, eq. (4) holds with ``D^L = diag(g'(z^L))``;
    dropping ``D^L``, as the theorem's ``Y = f(B_L(...))`` suggests, fails."""
    model = reference.random_model(3, "tanh", "learned", output_activation="tanh")
    x, y = reference.random_batch(model, 6)
    dY_da, _, _ = reference.autograd_errors(model, x, y, loss)
    expected = reference.autograd_gradients(model, x, y, loss, "sum")["input"]
    mats = _matrices(model, x)
    assert reference.relative_error(_equation_4(mats, dY_da), expected) <= AGREE
    without = _equation_4(mats, dY_da, include_D_L=False)
    assert reference.relative_error(without, expected) > DISAGREE


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error", "score"])
def test_equation_4_identity_output_has_d_L_identity(loss):
    """With ``Y = f(z^L)`` eq. (4) is right with ``D^L = I``, which is what
    ``theorem_matrices`` returns for the identity output."""
    model = reference.random_model(3, "relu", "none", output_activation="identity")
    x, y = reference.random_batch(model, 6)
    dY_da, _, _ = reference.autograd_errors(model, x, y, loss)
    if loss == "score":
        dY_da = np.eye(model.n_classes)[y]
    expected = reference.autograd_gradients(model, x, y, loss, "sum")["input"]
    mats = _matrices(model, x)
    assert np.array_equal(mats[-1][1], np.broadcast_to(np.eye(3), (6, 3, 3)))
    assert reference.relative_error(_equation_4(mats, dY_da), expected) <= AGREE


def test_equation_12_first_sum_carries_q_L():
    """Eq. (12): the sum over ``s_{L-1}`` carries ``Q^L_{s_L s_{L-1}}``. The
    printed ``Q^2`` there gives a different number for ``L = 3``."""
    model = _equal_width_model(depth=3)
    x, y = reference.random_batch(model, 5)
    dY_da, _, _ = reference.autograd_errors(model, x, y)
    expected = reference.autograd_gradients(model, x, y, reduction="sum")["input"]
    (Q1, D1, _), (Q2, D2, _), (Q3, D3, _) = _matrices(model, x)

    def equation_12(Q_first):
        # dY/dx_j = sum dY/da_{s3} g'(z_{s3}) Q_{s3 s2} g'(z_{s2}) Q2_{s2 s1}
        #           g'(z_{s1}) Q1_{s1 j}, with diagonals read off D.
        d1, d2, d3 = (np.einsum("nkk->nk", D) for D in (D1, D2, D3))
        return np.einsum(
            "na,na,nab,nb,nbc,nc,ncj->nj", dY_da, d3, Q_first, d2, Q2, d1, Q1
        )

    assert reference.relative_error(equation_12(Q3), expected) <= AGREE
    assert reference.relative_error(equation_12(Q2), expected) > DISAGREE


def test_equation_32_uses_derivative():
    """Eq. (32): ``dY/dW1_ij = sum_s e_s W2_si g'(u_i) a_j``, with ``g'``
    where the manuscript prints ``g``."""
    model = reference.random_model(3, "tanh", "learned", bias=False)
    x, y = reference.random_batch(model, 5)
    _, errors, _ = reference.autograd_errors(model, x, y)
    expected = reference.autograd_gradients(model, x, y, reduction="sum")
    traces, _ = model.trace(x)
    for index, (trace, block, e) in enumerate(zip(traces, model.blocks, errors)):
        back = e @ block.W2
        corrected = (back * (1 - np.tanh(trace.u) ** 2)).T @ trace.a_prev
        printed = (back * np.tanh(trace.u)).T @ trace.a_prev
        target = expected[f"blocks.{index}.W1"]
        assert reference.relative_error(corrected, target) <= AGREE, index
        assert reference.relative_error(printed, target) > DISAGREE, index


def test_weight_differential_acts_on_z():
    """Eqs. (45)-(48): the left side, printed ``d a^l``, is ``d z^l``, which
    (46)-(48) give as ``W2 D_hat^l dW1 a^{l-1}``, ``dW2 h^l`` and
    ``dW3 a^{l-1}``; ``d a^l`` would carry ``D^l`` as well."""
    model = _equal_width_model(depth=2, bias=True)
    x, _ = reference.random_batch(model, 5)
    params = {k: v.detach() for k, v in reference.torch_parameters(model).items()}
    traces, _ = model.trace(x)
    trace = traces[0]
    D_hat = 1 - np.tanh(trace.u) ** 2
    D = 1 - np.tanh(trace.z) ** 2
    rng = np.random.default_rng(3)
    block = model.blocks[0]
    for name in ("W1", "W2", "W3"):
        direction = rng.standard_normal(getattr(block, name).shape)

        def z_and_a(weight, name=name):
            _, z = reference.torch_block(
                model, {**params, f"blocks.0.{name}": weight}, 0, torch.asarray(x)
            )
            return z, torch.tanh(z)

        _, (dz, da) = torch.autograd.functional.jvp(
            z_and_a, params[f"blocks.0.{name}"], torch.asarray(direction)
        )
        if name == "W1":
            formula = ((trace.a_prev @ direction.T) * D_hat) @ block.W2.T
        elif name == "W2":
            formula = trace.h @ direction.T
        else:
            formula = trace.a_prev @ direction.T
        assert reference.relative_error(formula, dz) <= AGREE, name
        assert reference.relative_error(D * formula, da) <= AGREE, name
        assert reference.relative_error(formula, da) > DISAGREE, name


def _weight_gradients(mats, traces, blocks, dY_da, extra_Q):
    """Eqs. (49)-(54) with ``P^l``, or with the printed ``P^l Q^l``."""
    grads = []
    for index, P in enumerate(_p_matrices(mats)):
        Q, _, D_hat = mats[index]
        left = P @ Q if extra_Q else P
        hidden = _transpose_times(left @ blocks[index].W2 @ D_hat, dY_da)
        error = _transpose_times(left, dY_da)
        trace = traces[index]
        grads.append(
            {
                "W1": hidden.T @ trace.a_prev,
                "W2": error.T @ trace.h,
                "W3": error.T @ trace.a_prev,
            }
        )
    return grads


def test_equations_49_to_54_end_with_q_next_d_l():
    """Eqs. (49)-(54): the product ends ``... Q^{l+1} D^l``, as in (6)-(8),
    while the printed ``... D^l Q^l`` has an extra ``Q^l`` and disagrees."""
    model = _equal_width_model(depth=3)
    x, y = reference.random_batch(model, 5)
    dY_da, _, _ = reference.autograd_errors(model, x, y)
    expected = reference.autograd_gradients(model, x, y, reduction="sum")
    traces, _ = model.trace(x)
    mats = _matrices(model, x)
    corrected = _weight_gradients(mats, traces, model.blocks, dY_da, extra_Q=False)
    printed = _weight_gradients(mats, traces, model.blocks, dY_da, extra_Q=True)
    for index, name in itertools.product(range(model.depth), ("W1", "W2", "W3")):
        target = expected[f"blocks.{index}.{name}"]
        label = f"block {index} {name}"
        assert reference.relative_error(corrected[index][name], target) <= AGREE, label
        assert reference.relative_error(printed[index][name], target) > DISAGREE, label


def test_error_recurrence_matches_closed_form():
    """Eq. (55) lists closed forms ``e^l = (P^l)^T dY/da^L``. The recurrence
    ``e^{l-1} = D^{l-1} (Q^l)^T e^l`` from ``e^L = D^L dY/da^L`` gives the
    same vectors, and ``e_hat^l = D_hat^l W2^T e^l`` is ``dY/du^l``."""
    model = reference.random_model(4, "softplus", "learned", output_activation="tanh")
    x, y = reference.random_batch(model, 6)
    dY_da, errors, hidden_errors = reference.autograd_errors(model, x, y)
    mats = _matrices(model, x)
    closed = [_transpose_times(P, dY_da) for P in _p_matrices(mats)]
    recurrence = [np.einsum("nkk,nk->nk", mats[-1][1], dY_da)]
    for index in range(model.depth - 1, 0, -1):
        back = _transpose_times(mats[index][0], recurrence[-1])
        recurrence.append(np.einsum("nkk,nk->nk", mats[index - 1][1], back))
    recurrence.reverse()
    for index in range(model.depth):
        assert reference.relative_error(closed[index], errors[index]) <= AGREE
        assert reference.relative_error(recurrence[index], errors[index]) <= AGREE
        D_hat = mats[index][2]
        e_hat = np.einsum(
            "nqq,nq->nq", D_hat, recurrence[index] @ model.blocks[index].W2
        )
        assert reference.relative_error(e_hat, hidden_errors[index]) <= AGREE


def _printed_59_every_pair_swapped(mats):
    # Q^L D^L Q^{L-1} D^{L-1} ... Q^1 D^1
    return _chain(*[m for Q, D, _ in mats[::-1] for m in (Q, D)])


def _printed_59_first_pair_swapped(mats):
    # Q^L D^L D^{L-1} Q^{L-1} ... D^1 Q^1
    return _chain(
        mats[-1][0], mats[-1][1], *[m for Q, D, _ in mats[-2::-1] for m in (D, Q)]
    )


@pytest.mark.parametrize(
    "printed", [_printed_59_every_pair_swapped, _printed_59_first_pair_swapped]
)
def test_equations_59_60_order_starts_with_d_L(printed):
    """Eqs. (59)-(60) equal eq. (4): ``D^L Q^L D^{L-1} ... D^1 Q^1``.

    The printed ``Q^L D^L Q^{L-1} ...`` is read two ways (each ``D^l`` after
    its ``Q^l``, or only the first pair swapped), and both disagree.
    """
    model = _equal_width_model(depth=3)
    x, y = reference.random_batch(model, 5)
    dY_da, _, _ = reference.autograd_errors(model, x, y)
    expected = reference.autograd_gradients(model, x, y, reduction="sum")["input"]
    mats = _matrices(model, x)
    corrected = _chain(*[m for Q, D, _ in mats[::-1] for m in (D, Q)])
    assert (
        reference.relative_error(_transpose_times(corrected, dY_da), expected) <= AGREE
    )
    wrong = _transpose_times(printed(mats), dY_da)
    assert reference.relative_error(wrong, expected) > DISAGREE


def test_identity_blocks_still_multiply_by_d():
    """Blocks with ``W1 = W2 = 0`` and ``W3 = I`` have ``Q^l = I``, but the
    error still passes ``D^{l-1}``: with a sigmoid, ``g' <= 1/4``, so each
    such block shrinks ``e`` at least fourfold. Identity blocks alone do not
    stop gradients from vanishing."""
    base = resgrad.ResidualMLP.init([4, 4, 4], activation="sigmoid", seed=2)
    identity = resgrad.Block(W1=np.zeros((3, 4)), W2=np.zeros((4, 3)), W3=np.eye(4))
    model = resgrad.ResidualMLP(base.blocks + [identity] * 4, activation="sigmoid")
    x, y = reference.random_batch(model, 5)
    _, errors, _ = reference.autograd_errors(model, x, y)
    mats = _matrices(model, x)
    for index in range(2, model.depth):
        assert np.array_equal(mats[index][0], np.broadcast_to(np.eye(4), (5, 4, 4)))
        inner = np.linalg.norm(errors[index - 1], axis=1)
        outer = np.linalg.norm(errors[index], axis=1)
        assert np.all(inner <= outer / 4), index
        assert np.all(inner > 0), index


def test_equation_65_projects_each_step():
    """Eq. (65): each MI-FGSM step is projected onto the eps-ball and the box.

    Four steps of 0.05 with eps = 0.1 leave the ball unless projected, so
    the printed update without projection ends farther than eps from x.
    """
    model = reference.random_model(2, "tanh", "learned")
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 0.8, size=(6, model.sizes[0]))
    y = rng.integers(0, model.n_classes, size=6)
    eps, alpha, steps = 0.1, 0.05, 4

    def iterate(project):
        momentum, current = np.zeros_like(x), x
        for _ in range(steps):
            _, grad = resgrad.input_gradient(model, current, y)
            l1 = np.sum(np.abs(grad), axis=1, keepdims=True)
            momentum = momentum + grad / l1
            current = current + alpha * np.sign(momentum)
            if project:
                current = np.clip(np.clip(current, x - eps, x + eps), 0.0, 1.0)
        return current

    result = resgrad.attacks.mifgsm(model, x, y, eps, alpha=alpha, steps=steps)
    np.testing.assert_allclose(result.x_adv, iterate(project=True), rtol=0, atol=1e-15)
    assert np.max(np.abs(result.x_adv - x)) <= eps + 1e-12
    assert np.max(np.abs(iterate(project=False) - x)) > eps + 0.05


def test_theory_doc_cites_existing_tests():
    """Every ``tests/<file>.py::<name>`` that docs/theory.md cites exists."""
    root = Path(__file__).resolve().parent.parent
    text = (root / "docs" / "theory.md").read_text()
    cited = set(re.findall(r"tests/(\w+\.py)::(\w+)", text))
    assert len(cited) >= 20
    for filename, name in sorted(cited):
        source = (root / "tests" / filename).read_text()
        assert f"def {name}(" in source, f"{filename}::{name}"
