import pytest
import torch

from defr.losses import bce, focal, lse_sign_loss, weighted_bce


def paper_lse_sign(logits, targets):
    """DEFR Eq. 2 written literally: log(1 + Σ exp(−y s)), y = ±1."""
    y = 2 * targets - 1
    return torch.log(1 + torch.exp(-y * logits).sum(dim=1))


def test_lse_sign_value_and_gradient_match_paper():
    torch.manual_seed(0)
    logits = (torch.randn(5, 30, dtype=torch.float64) * 3).requires_grad_()
    targets = (torch.rand(5, 30) < 0.2).double()
    ours = lse_sign_loss(logits, targets, reduction="none")
    ref = paper_lse_sign(logits, targets)
    torch.testing.assert_close(ours, ref)
    (g,) = torch.autograd.grad(ours.sum(), logits)
    # Eq. 3: ∂L/∂s_i = −y_i · exp(−y_i s_i) / (1 + Σ_j exp(−y_j s_j))
    y = 2 * targets - 1
    e = torch.exp(-y * logits.detach())
    torch.testing.assert_close(g, -y * e / (1 + e.sum(dim=1, keepdim=True)))


@pytest.mark.parametrize("scale", [1e2, 1e3, 1e4])
def test_lse_sign_stable_at_large_logits(scale):
    torch.manual_seed(1)
    logits = (torch.randn(4, 600) * scale).requires_grad_()
    targets = (torch.rand(4, 600) < 0.05).float()
    loss = lse_sign_loss(logits, targets)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # dominated by the worst-classified entry: L ≈ max(0, max_i −y_i s_i)
    worst = (-(2 * targets - 1) * logits.detach()).amax(dim=1).clamp(min=0).mean()
    assert abs(loss.item() - worst.item()) <= 1e-3 * worst.item() + 1


def test_lse_sign_ignore_excludes_entries():
    torch.manual_seed(2)
    logits = torch.randn(3, 10)
    targets = (torch.rand(3, 10) < 0.3).float()
    ignore = torch.zeros(3, 10, dtype=torch.bool)
    ignore[:, 5:] = True
    ours = lse_sign_loss(logits, targets, ignore=ignore, reduction="none")
    torch.testing.assert_close(ours, paper_lse_sign(logits[:, :5], targets[:, :5]))


def test_bce_family_reduce_and_ignore():
    torch.manual_seed(3)
    logits = torch.randn(4, 8)
    targets = (torch.rand(4, 8) < 0.5).float()
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / 4
    torch.testing.assert_close(bce(logits, targets), ref)
    torch.testing.assert_close(weighted_bce(logits, targets, torch.ones(8)), ref)
    ignore = torch.ones(4, 8, dtype=torch.bool)
    assert bce(logits, targets, ignore=ignore).item() == 0.0
    # focal with gamma=0, alpha=0.5 is half of BCE
    torch.testing.assert_close(focal(logits, targets, gamma=0.0, alpha=0.5), ref / 2)


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match="targets shape"):
        lse_sign_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        bce(torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg")
    with pytest.raises(ValueError, match="pos_weight"):
        weighted_bce(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(4))
