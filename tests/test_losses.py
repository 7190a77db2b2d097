"""Loss modules vs plain-loop oracles written from their definitions."""

import math

import pytest
import torch

from cmamlib.losses import (
    CircleClassifier,
    CrossEntropyLabelSmooth,
    DistanceMatrixLoss,
    SimilarityMatrixLoss,
    SymmetricKL,
    TripletLoss,
)


def _ce_ls_oracle(logits, targets, eps):
    total = 0.0
    b, c = logits.shape
    for i in range(b):
        z = [float(v) for v in logits[i]]
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        for j in range(c):
            q = (1 - eps) * (1.0 if j == int(targets[i]) else 0.0) + eps / c
            total += -q * (z[j] - lse)
    return total / b


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cross_entropy_label_smooth(eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g) * 3
    targets = torch.randint(0, 5, (7,), generator=g)
    got = CrossEntropyLabelSmooth(eps)(logits, targets).item()
    assert got == pytest.approx(_ce_ls_oracle(logits, targets, eps), abs=1e-5)
    if eps == 0.0:
        assert got == pytest.approx(torch.nn.functional.cross_entropy(logits, targets).item(), abs=1e-5)


def _circle_oracle(f, w, y, s, m):
    """fast-reid Circle.forward written as loops: cosines of normalised rows, then the
    target / non-target logits."""
    out = []
    for i in range(f.shape[0]):
        nf = math.sqrt(sum(float(v) ** 2 for v in f[i]))
        row = []
        for c in range(w.shape[0]):
            nw = math.sqrt(sum(float(v) ** 2 for v in w[c]))
            cos = sum(float(a) * float(b) for a, b in zip(f[i], w[c])) / (nf * nw)
            if c == int(y[i]):
                row.append(s * max(0.0, 1 + m - cos) * (cos - (1 - m)))
            else:
                row.append(s * max(0.0, cos + m) * (cos - m))
        out.append(row)
    return out


def test_circle_classifier_oracle_and_detached_alphas():
    g = torch.Generator().manual_seed(3)
    head = CircleClassifier(6, 5, scale=64.0, margin=0.35)
    with torch.no_grad():
        head.weight.copy_(torch.randn(5, 6, generator=g))
    f = torch.randn(7, 6, generator=g, requires_grad=True)
    y = torch.randint(0, 5, (7,), generator=g)
    z = head(f, y)
    assert z.shape == (7, 5)
    want = _circle_oracle(f.detach(), head.weight.detach(), y, 64.0, 0.35)
    for i in range(7):
        for c in range(5):
            assert float(z[i, c]) == pytest.approx(want[i][c], abs=1e-4)
    # alphas are detached: d z_ic / d cos_ic = s * alpha (not s * (alpha + d alpha / d cos * ...))
    cos = head.cosine(f.detach()).detach().requires_grad_(True)
    from cmamlib.losses import circle_logits

    circle_logits(cos, y, 64.0, 0.35).sum().backward()
    c = cos.detach()
    onehot = torch.nn.functional.one_hot(y, 5).bool()
    alpha = torch.where(onehot, (1.35 - c).clamp_min(0), (c + 0.35).clamp_min(0))
    assert torch.allclose(cos.grad, 64.0 * alpha, atol=1e-5)
    # with the label-smoothed CE it trains the features and the class weights
    loss = CrossEntropyLabelSmooth(0.1)(z, y)
    loss.backward()
    assert f.grad is not None and head.weight.grad is not None and math.isfinite(loss.item())
    with pytest.raises(ValueError, match="num_classes"):
        CircleClassifier(6, 0)


def test_circle_classifier_init_is_the_codes_kaiming_uniform():
    # fast-reid's weights_init_classifier on a Circle: kaiming_uniform_(a=sqrt(5)), bound 1 / sqrt(D)
    torch.manual_seed(11)
    head = CircleClassifier(64, 300)
    torch.manual_seed(11)
    want = torch.empty(300, 64)
    torch.nn.init.kaiming_uniform_(want, a=math.sqrt(5))
    assert torch.equal(head.weight.detach(), want)
    w = head.weight.detach()
    bound = 1 / math.sqrt(64)
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.95 * bound


def _triplet_oracle(f, y, margin):
    n = len(y)
    losses = []
    for a in range(n):
        if y[a] < 0:
            continue
        dp, dn = None, None
        for j in range(n):
            if y[j] < 0 or j == a:
                continue
            d = math.sqrt(max(sum((float(f[a, k]) - float(f[j, k])) ** 2 for k in range(f.shape[1])), 1e-12))
            if y[j] == y[a]:
                dp = d if dp is None else max(dp, d)
            else:
                dn = d if dn is None else min(dn, d)
        if dp is not None and dn is not None:
            losses.append(math.log1p(math.exp(dp - dn)) if margin is None else max(0.0, dp - dn + margin))
    return sum(losses) / len(losses)


def test_triplet_batch_hard():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(12, 6, generator=g)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, -1, 3, 5])  # 5 has no positive, -1 ignored
    got = TripletLoss(0.3)(f, y).item()
    assert got == pytest.approx(_triplet_oracle(f, y.tolist(), 0.3), abs=1e-5)


def test_triplet_soft_margin():
    """margin=None: softplus(d_ap - d_an), fast-reid's soft margin (TRI.MARGIN 0)."""
    g = torch.Generator().manual_seed(4)
    f = torch.randn(12, 6, generator=g)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, -1, 3, 5])
    got = TripletLoss(None)(f, y).item()
    assert got == pytest.approx(_triplet_oracle(f, y.tolist(), None), abs=1e-5)
    # fast-reid's form on a batch where every anchor has both: soft_margin_loss(d_an - d_ap, 1)
    ff, yy = f[:8], y[:8]
    d = torch.cdist(ff, ff)
    same = yy[:, None] == yy[None]
    dap = torch.where(same, d, torch.zeros_like(d)).max(1).values
    dan = torch.where(~same, d, torch.full_like(d, 1e9)).min(1).values
    want = torch.nn.functional.soft_margin_loss(dan - dap, torch.ones_like(dan)).item()
    assert TripletLoss(None)(ff, yy).item() == pytest.approx(want, abs=1e-5)


def test_triplet_no_valid_anchor_is_zero_with_grad():
    f = torch.randn(3, 4, requires_grad=True)
    loss = TripletLoss()(f, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0.0


def _softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def test_symmetric_kl_oracle_and_gradient_flow():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(5, 4, generator=g, requires_grad=True)
    t = torch.randn(5, 4, generator=g, requires_grad=True)
    got = SymmetricKL()(s, t)
    total = 0.0
    for i in range(5):
        p = _softmax([float(v) for v in s[i].detach()])
        q = _softmax([float(v) for v in t[i].detach()])
        kl_qp = sum(q[j] * math.log(q[j] / p[j]) for j in range(4))
        kl_pq = sum(p[j] * math.log(p[j] / q[j]) for j in range(4))
        total += 0.5 * (kl_qp + kl_pq)
    assert got.item() == pytest.approx(total / 5, abs=1e-6)
    got.backward()
    assert s.grad is not None and t.grad is None  # teacher detached
    assert SymmetricKL(reduction="sum")(s, t).item() == pytest.approx(total, abs=1e-5)


def _cos_matrix(x):
    n = x.shape[0]
    z = []
    for i in range(n):
        nr = math.sqrt(sum(float(v) ** 2 for v in x[i]))
        z.append([float(v) / nr for v in x[i]])
    return [[sum(a * b for a, b in zip(z[i], z[j])) for j in range(n)] for i in range(n)]


def test_similarity_matrix_loss():
    g = torch.Generator().manual_seed(3)
    s = torch.randn(6, 5, generator=g, requires_grad=True)
    t = torch.randn(6, 3, generator=g)
    gs, gt = _cos_matrix(s.detach()), _cos_matrix(t)
    want = sum((gt[i][j] - gs[i][j]) ** 2 for i in range(6) for j in range(6))
    got = SimilarityMatrixLoss()(s, t)
    assert got.item() == pytest.approx(want, abs=1e-5)
    assert SimilarityMatrixLoss("mean")(s, t).item() == pytest.approx(want / 36, abs=1e-6)
    got.backward()
    assert s.grad is not None


def test_distance_matrix_loss():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(5, 4, generator=g)
    b = torch.randn(5, 7, generator=g)

    def dm(x):
        z = [[float(v) / math.sqrt(sum(float(u) ** 2 for u in row)) for v in row] for row in x]
        return [
            [math.sqrt(max(sum((p - q) ** 2 for p, q in zip(z[i], z[j])), 1e-12)) for j in range(len(z))]
            for i in range(len(z))
        ]

    da, db = dm(a), dm(b)
    want = sum((da[i][j] - db[i][j]) ** 2 for i in range(5) for j in range(5)) / 25
    assert DistanceMatrixLoss()(a, b).item() == pytest.approx(want, abs=1e-5)
    assert DistanceMatrixLoss(reduction="sum")(a, b).item() == pytest.approx(25 * want, abs=1e-4)  # the authors' code
    with pytest.raises(ValueError, match="reduction 'max'"):
        DistanceMatrixLoss(reduction="max")
