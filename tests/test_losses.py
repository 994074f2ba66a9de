import math

import pytest
import torch

from glamd_core import losses as L
from glamd_core.methods.defeat import defeat_feature_loss


def test_losses_are_zero_when_student_equals_teacher():
    f = torch.randn(2, 4, 6, 5)
    w = torch.rand(2, 1, 6, 5)
    assert L.feature_imitation_loss(f, f.clone(), w) == 0
    assert L.attention_transfer_loss(f, f.clone()) == 0
    logits = torch.randn(2, 30, 9)
    assert L.sigmoid_distill_loss(logits, logits.clone(), torch.rand(2, 30)).abs() < 1e-6
    assert L.softmax_distill_loss(logits[0], logits[0].clone(), torch.rand(30)).abs() < 1e-6
    boxes = torch.tensor([[[0.0, 0, 10, 10], [5, 5, 20, 30]]])
    assert L.iou_distill_loss(boxes, boxes.clone(), torch.ones(1, 2)).abs() < 1e-6
    assert defeat_feature_loss(f, f.clone(), torch.rand(2, 1, 6, 5) > 0.5) == 0


def test_feature_imitation_is_the_weighted_mean_square():
    t, s = torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randn(1, 2, 3, 3, dtype=torch.float64)
    w = torch.rand(1, 1, 3, 3, dtype=torch.float64)
    expected = sum(float(w[0, 0, y, x]) * float(t[0, c, y, x] - s[0, c, y, x]) ** 2
                   for c in range(2) for y in range(3) for x in range(3)) / 18
    assert float(L.feature_imitation_loss(t, s, w)) == pytest.approx(expected)


def test_sigmoid_distill_is_the_weighted_bernoulli_kl():
    s, t = torch.randn(1, 4, 3, dtype=torch.float64), torch.randn(1, 4, 3, dtype=torch.float64)
    w = torch.rand(1, 4, dtype=torch.float64)
    kl = torch.zeros(1, 4, dtype=torch.float64)
    for a in range(4):
        for k in range(3):
            p, q = torch.sigmoid(t[0, a, k]), torch.sigmoid(s[0, a, k])
            kl[0, a] += p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    assert float(L.sigmoid_distill_loss(s, t, w)) == pytest.approx(float((w * kl).sum() / w.sum()))


def test_paired_iou_and_iou_loss_known_values():
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 2, 2]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [5, 5, 6, 6]])
    assert L.paired_iou(a, b).tolist() == pytest.approx([1.0, 50 / 150, 0.0])
    w = torch.tensor([1.0, 3.0, 0.0])
    assert float(L.iou_distill_loss(a, b, w)) == pytest.approx(3 * (1 - 1 / 3) / 4)


def test_softmax_distill_known_value():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert float(L.softmax_distill_loss(s, t, torch.ones(1))) == pytest.approx(expected)


def test_defeat_normalises_foreground_and_background_separately():
    t = torch.zeros(1, 1, 2, 2)
    s = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])
    fg = torch.tensor([[[[True, False], [False, False]]]])
    # fg: mean of {1} = 1; bg: mean of {0, 0, 4} = 4/3
    assert float(defeat_feature_loss(t, s, fg, 4.0, 16.0)) == pytest.approx(4 * 1 + 16 * 4 / 3)


def test_losses_decrease_when_the_student_is_trained_on_them_alone():
    torch.manual_seed(0)
    t = torch.randn(2, 8, 6, 6)
    s = torch.randn(2, 8, 6, 6, requires_grad=True)
    logits_t, logits_s = torch.randn(2, 20, 5), torch.randn(2, 20, 5, requires_grad=True)
    opt = torch.optim.Adam([s, logits_s], lr=0.05)
    w = torch.rand(2, 1, 6, 6) + 0.5

    def total():
        return (L.feature_imitation_loss(t, s, w) + L.attention_transfer_loss(t, s)
                + L.sigmoid_distill_loss(logits_s, logits_t, torch.ones(2, 20)))

    first = float(total().detach())
    for _ in range(100):
        opt.zero_grad()
        total().backward()
        opt.step()
    assert float(total().detach()) < 0.1 * first
