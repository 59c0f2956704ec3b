"""The training loss: label-smoothed cross-entropy over the output layer, a chunk of positions at a time.

The plain way (logits = out(hidden), then cross-entropy) keeps [positions, vocabulary] tensors alive from the
forward pass to the backward one: at a 6,000-token batch and a vocabulary of 8,000, the logits, their fp32
copy, the log-probabilities and their gradients are 100-200 MB each, the largest tensors of a step by far.
Here the output layer and the loss are one autograd function that, ``CHUNK`` positions at a time, computes the
logits, the loss, and at once the gradient of the loss with respect to the logits (softmax minus the smoothed
one-hot: the loss is the graph's end, so it is known in the forward pass), turns it into the gradients of the
hidden states, weight and bias, and drops the chunk. What lives until backward is [positions, hidden] and
[vocabulary, hidden]; backward only scales them by the incoming gradient. Same arithmetic as the plain way:
the matmuls run in whatever dtype autocast gives them, the softmax in fp32.

Written by hand: the maintained fused kernels of this (Liger-Kernel's fused linear cross-entropy, Apple's
cut-cross-entropy) are Triton, GPU only; this must run on the CPU too.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.tokens import PAD

CHUNK = 2048  # positions whose logits exist at a time: [2048, 8000] fp32 is 65 MB


def smoothed_nll(logp: Tensor, gold: Tensor, smoothing: float) -> tuple[Tensor, Tensor]:
    """(label-smoothed loss, NLL), sums over the non-pad positions. logp [N, V] log-probabilities, gold [N].
    Smoothing as F.cross_entropy's: ``smoothing`` spread over the whole vocabulary."""
    keep = gold != PAD
    nll = -logp.gather(1, gold[:, None]).squeeze(1).masked_fill(~keep, 0.0).sum()
    if not smoothing:
        return nll, nll
    uniform = -logp.mean(-1).masked_fill(~keep, 0.0).sum()
    return (1.0 - smoothing) * nll + smoothing * uniform, nll


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, gold: Tensor,
                smoothing: float) -> tuple[Tensor, Tensor]:
        kind = hidden.device.type
        # fp16 autocast (older GPUs): these gradients are not yet multiplied by the loss scale, and fp16 would
        # flush the small ones to zero, so their matmuls run in fp32 and grad_hidden stays fp32 until backward
        # has scaled it; bf16 has fp32's range
        fp16 = torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.float16
        ctx.hidden_dtype = hidden.dtype
        grad_hidden = torch.empty_like(hidden, dtype=torch.float32 if fp16 else hidden.dtype)  # [N, H]
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)  # [V, H]
        grad_bias = torch.zeros(weight.size(0), dtype=torch.float32, device=weight.device) if bias is not None else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        nll = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for first in range(0, hidden.size(0), CHUNK):
            h, g = hidden[first:first + CHUNK], gold[first:first + CHUNK]
            logp = F.linear(h, weight, bias).float().log_softmax(-1)  # [chunk, V]
            chunk_loss, chunk_nll = smoothed_nll(logp, g, smoothing)
            loss, nll = loss + chunk_loss, nll + chunk_nll
            # d loss / d logits = softmax - ((1 - eps) one-hot + eps / V), zero on padding
            grad = logp.exp_()
            grad.scatter_add_(1, g[:, None], torch.full((g.size(0), 1), smoothing - 1.0, dtype=grad.dtype,
                                                          device=grad.device))
            if smoothing:
                grad -= smoothing / weight.size(0)
            grad.masked_fill_((g == PAD)[:, None], 0.0)
            with torch.autocast(kind, enabled=False) if fp16 else contextlib.nullcontext():
                grad_hidden[first:first + CHUNK] = torch.matmul(grad, weight.to(grad.dtype)).to(grad_hidden.dtype)
                grad_weight += torch.matmul(grad.t(), h.to(grad.dtype)).float()
            if grad_bias is not None:
                grad_bias += grad.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _grad_nll: Tensor):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        return ((grad_hidden * grad_loss).to(ctx.hidden_dtype), grad_weight * grad_loss,
                grad_bias * grad_loss if grad_bias is not None else None, None, None)


def linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Tensor | None, gold: Tensor,
                         smoothing: float = 0.0) -> tuple[Tensor, Tensor]:
    """(label-smoothed loss, NLL) of the output layer ``hidden @ weight.T + bias`` against ``gold``, summed over
    the non-pad positions; hidden [N, H], weight [V, H], gold [N]. The NLL carries no gradient."""
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, bias, gold, smoothing)
    loss = nll = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for first in range(0, hidden.size(0), CHUNK):  # no gradient wanted (validation): the loss alone
        logp = F.linear(hidden[first:first + CHUNK], weight, bias).float().log_softmax(-1)
        chunk_loss, chunk_nll = smoothed_nll(logp, gold[first:first + CHUNK], smoothing)
        loss, nll = loss + chunk_loss, nll + chunk_nll
    return loss, nll
