"""REBAR (Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017), Bernoulli and categorical nodes.

ĝ = [f(b) − η f(σ_λ(z̃))] ∇ log p(b) + η ∇ f(σ_λ(z)) − η ∇ f(σ_λ(z̃)), b = H(z), z̃ ~ p(z | b)
reparameterised through the logits given b and fresh noise v; σ_λ(z) = σ(z/λ) (softmax(z/λ) for
a categorical). Unbiased for every η and λ > 0; three decoder evaluations per gradient.

The control variate η f(σ_λ(·)) is ``relaxation``, a :class:`RelaxedControlVariate` from
:mod:`gradbench.estimators.control_variates` (η, log λ and σ_λ); this module draws b, z and z̃,
forms ĝ and tunes η and λ.

Sample axis: ``sample`` returns [3, *batch, *event], row 0 the discrete b, row 1 σ_λ(z), row 2
σ_λ(z̃); the model decodes all three and returns data_loss [3, batch]. The decoder's parameters
learn from row 0 only, as in the RELAX authors' VAE code: the relaxed rows enter only ĝ, the
gradient with respect to the node's logits, which ``gradient_term`` forms explicitly (one
autograd pass through rows 1 and 2 down to the logits) and hands to the encoder as
⟨stopgrad(ĝ), logits⟩.

Tuning (``tune``): η and log λ descend a single-sample estimate of the variance of ĝ,
∂/∂(η, log λ) of the minibatch mean of ‖ĝ‖², with the estimator's own Adam (``tune_lr``). That
needs ĝ as a differentiable function of η and λ, i.e. a second backward pass through the
decoder, which is only possible while the step's graph is alive and the model's parameters are
unchanged. ``observe`` comes too late for it (the training step has already run backward, which
frees the graph, and the optimizer step, which changes the parameters in place; measurement
code calls it under no_grad), so the double backprop happens in ``gradient_term`` instead: in
plain autograd with gradients flowing to the logits (a training step), it adds a term of value
0 whose gradient is the variance gradient for the estimator's own tuning parameters and exactly
zero for everything else. The step's backward thus leaves the tuning gradient in their
``.grad`` (scaled by the caller's reduction over the minibatch; Adam does not mind), and
``observe`` takes one Adam step on it and clears it. Under ``torch.func`` transforms (gradient
draws) or no_grad, no such term is built and η, λ enter detached, so draws at fixed settings
are plain REBAR. Forward passes fed to ``observe`` without a backward (the settling loops of
the measurements) change nothing but the clock, so the estimator does not ask for them
(``tracks_losses`` is False): a measurement uses the η, λ it was built or loaded with.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradbench.estimators.base import Estimator, StochasticForward, register_estimator
from gradbench.estimators.control_variates import RelaxedControlVariate
from gradbench.estimators.nodes import (
    CategoricalNode,
    StochasticNode,
    conditional_gumbel,
    conditional_logistic,
    gumbel_like,
    logistic_like,
    one_hot_argmax,
    uniform_like,
)


def score(node: StochasticNode, b: Tensor) -> Tensor:
    """∇_logits log p(b), shaped like the logits: b − σ(α) (Bernoulli), b − softmax(α)
    (categorical)."""
    if isinstance(node, CategoricalNode):
        return b - torch.softmax(node.logits, dim=-1)
    return b - torch.sigmoid(node.logits)


def tuning_is_live(enabled: bool, nodes: list[StochasticNode]) -> bool:
    """True when a tuning gradient can be formed and delivered: tuning on, plain autograd (grad
    mode on and no ``torch.func`` transform active, by the check torch.autograd itself uses) and
    some node's logits carry gradients."""
    return (
        enabled
        and torch.is_grad_enabled()
        and not torch._C._are_functorch_transforms_active()
        and any(node.logits.requires_grad for node in nodes)
    )


@register_estimator
class Rebar(Estimator):
    """REINFORCE with the relaxation η f(σ_λ(·)) as a control variate, corrected to be unbiased."""

    name = "rebar"
    summary = "REBAR: [f(b) − η f(σ_λ(z̃))] ∇ log p(b) + η ∇ f(σ_λ(z)) − η ∇ f(σ_λ(z̃))"
    unbiased = True
    node_kinds = frozenset({"bernoulli", "categorical"})

    def __init__(
        self,
        *,
        eta: float = 1.0,
        temperature: float = 0.5,
        tune: bool = True,
        tune_lr: float = 1e-3,
    ) -> None:
        super().__init__()
        self.relaxation = RelaxedControlVariate(eta, temperature)
        if not tune_lr > 0:
            raise ValueError(f"tune_lr must be positive, got {tune_lr}")
        self.tune = tune
        self.tuner = torch.optim.Adam(self.relaxation.parameters(), lr=tune_lr, fused=True)

    @property
    def eta(self) -> nn.Parameter:
        """η, the scale of the relaxed control variate."""
        return self.relaxation.eta

    @property
    def log_temperature(self) -> nn.Parameter:
        """log λ, the relaxation's log temperature."""
        return self.relaxation.log_temperature

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3,)

    def tuning_parameters(self) -> list[nn.Parameter]:
        """The parameters ``observe`` tunes: η, log λ."""
        return list(self.relaxation.parameters())

    def sample(self, node: StochasticNode) -> Tensor:
        """[b, σ_λ(z), σ_λ(z̃)] stacked on a leading axis of 3; b carries no gradient, the
        relaxed rows are differentiable in the logits (and in λ while tuning is live)."""
        self._check_kind(node)
        if isinstance(node, CategoricalNode):
            log_probs = node.log_probs()
            z = log_probs + gumbel_like(log_probs)
            b = one_hot_argmax(z.detach())
            z_tilde = conditional_gumbel(log_probs, b, uniform_like(log_probs))
        else:
            z = node.logits + logistic_like(node.logits)
            b = (z.detach() > 0).to(z.dtype)
            z_tilde = conditional_logistic(node.logits, b, uniform_like(node.logits))
        live = tuning_is_live(self.tune, [node])
        relaxed, relaxed_tilde = self.relaxation.relax(node, (z, z_tilde), live)
        return torch.stack([b, relaxed, relaxed_tilde])

    def control_variates(self, forward: StochasticForward, live: bool) -> Tensor:
        """c(σ_λ(z)) and c(σ_λ(z̃)), [2, batch]: here η f at the relaxed rows (η detached unless
        tuning is live)."""
        return self.relaxation(forward.data_loss[1:], live)

    def logit_gradients(
        self, forward: StochasticForward, live: bool
    ) -> list[tuple[StochasticNode, Tensor]]:
        """ĝ = (f(b) − c(z̃)) ∇ log p(b) + ∇c(z) − ∇c(z̃) with respect to the logits of every node
        whose logits carry gradients, each shaped like its logits; differentiable in the tuning
        parameters when ``live``."""
        controls = self.control_variates(forward, live)  # [2, batch]
        coefficient = forward.data_loss[0].detach() - controls[1]  # [batch]
        pairs = [
            (n, s[0]) for n, s in zip(forward.nodes, forward.samples) if n.logits.requires_grad
        ]
        pathwise = (controls[0] - controls[1]).sum()
        paths: tuple[Tensor | None, ...] = (None,) * len(pairs)
        if pairs and pathwise.requires_grad:
            paths = torch.autograd.grad(
                pathwise,
                [n.logits for n, _ in pairs],
                retain_graph=True,  # row 0 shares the decoder's graph with the relaxed rows
                create_graph=live,
                allow_unused=True,
            )
        gradients = []
        for (node, b), path in zip(pairs, paths):
            events = node.logits.dim() - coefficient.dim()
            direction = coefficient.reshape(coefficient.shape + (1,) * events) * score(node, b)
            gradients.append((node, direction if path is None else direction + path))
        return gradients

    def gradient_term(self, forward: StochasticForward) -> Tensor:
        """f(b) + regularizer + Σ_nodes ⟨stopgrad(ĝ), logits⟩, [batch], plus, while tuning is
        live, Σ_p ⟨∂V/∂p, p − stopgrad(p)⟩ over the tuning parameters p, V the minibatch mean of
        ‖ĝ‖²: value 0, gradient ∂V/∂p for p and none for the model."""
        live = tuning_is_live(self.tune, forward.nodes)
        gradients = self.logit_gradients(forward, live)
        term = forward.loss[0]
        batch_dims = term.dim()
        for node, gradient in gradients:
            term = term + (gradient.detach() * node.logits).flatten(batch_dims).sum(-1)
        if not live or not gradients:
            return term
        variance = torch.stack([g.square().sum() for _, g in gradients]).sum() / term.numel()
        if not variance.requires_grad:
            return term
        parameters = self.tuning_parameters()
        grads = torch.autograd.grad(variance, parameters, retain_graph=True, allow_unused=True)
        for parameter, grad in zip(parameters, grads):
            if grad is not None:
                term = term + (grad.detach() * (parameter - parameter.detach())).sum()
        return term

    def value(self, forward: StochasticForward) -> Tensor:
        """The discrete row's loss f(b) + regularizer, [batch]."""
        return forward.loss[0]

    def observe(self, forward: StochasticForward) -> None:
        """One Adam step of the tuning parameters on the variance gradient the step's backward
        left in their ``.grad`` (none: nothing changes), then clear it."""
        super().observe(forward)
        self.tuner.step()
        self.tuner.zero_grad(set_to_none=True)
