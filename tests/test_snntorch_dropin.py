"""The neurons as drop-in replacements for snn.Leaky in snntorch tutorial code."""

import io

import pytest
import snntorch as snn
import torch
from snntorch import surrogate, utils
from torch import nn

import snntorch_weighted as sw

NEURONS = {
    "weighted": lambda **kw: sw.WeightedLeaky(num_phases=4, **kw),
    "radix": lambda **kw: sw.RadixLeaky(num_bits=4, **kw),
}


class TutorialNet(nn.Module):
    """snntorch tutorial 5 style: explicit state, init_leaky() at the start of each forward."""

    def __init__(self, make_neuron, num_steps=8):
        super().__init__()
        self.num_steps = num_steps
        self.fc1 = nn.Linear(8, 16)
        self.lif1 = make_neuron(spike_grad=surrogate.fast_sigmoid())
        self.fc2 = nn.Linear(16, 3)
        self.lif2 = make_neuron(spike_grad=surrogate.fast_sigmoid())

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for step in range(self.num_steps):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec), torch.stack(mem2_rec)


def sequential_net(make_neuron):
    """snntorch tutorial 7 style: nn.Sequential, init_hidden=True, output=True on the last layer."""
    grad = surrogate.atan()
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        make_neuron(spike_grad=grad, init_hidden=True),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 3),
        make_neuron(spike_grad=grad, init_hidden=True, output=True),
    )


def run_sequential(net, data):
    utils.reset(net)
    spk_rec, mem_rec = [], []
    for step in range(data.size(0)):
        spk, mem = net(data[step])
        spk_rec.append(spk)
        mem_rec.append(mem)
    return torch.stack(spk_rec), torch.stack(mem_rec)


@pytest.mark.parametrize("kind", NEURONS)
def test_explicit_state_tutorial_loop_runs(kind):
    torch.manual_seed(0)
    net = TutorialNet(NEURONS[kind])
    spk, mem = net(torch.rand(8, 5, 8) * 4)
    assert spk.shape == mem.shape == (8, 5, 3)
    assert set(spk.unique().tolist()) <= {0.0, 1.0}
    again, _ = net(torch.rand(8, 5, 8) * 0 + 0)  # init_leaky restarts every sequence
    assert again.shape == spk.shape


@pytest.mark.parametrize("kind", NEURONS)
def test_sequential_init_hidden_with_snntorch_utils_reset(kind):
    torch.manual_seed(0)
    net = sequential_net(NEURONS[kind])
    data = torch.rand(12, 2, 1, 8, 8) * 3
    spk1, mem1 = run_sequential(net, data)
    spk2, mem2 = run_sequential(net, data)
    assert spk1.shape == (12, 2, 3)
    assert torch.equal(spk1, spk2) and torch.equal(mem1, mem2)


def test_snntorch_losses_and_spike_counts_work_on_weighted_spikes():
    torch.manual_seed(0)
    net = sequential_net(NEURONS["weighted"])
    spk, mem = run_sequential(net, torch.rand(8, 4, 1, 8, 8) * 3)
    from snntorch import functional as SF

    loss = SF.ce_rate_loss()(spk, torch.tensor([0, 1, 2, 0]))
    assert torch.isfinite(loss)
    assert spk.sum(0).shape == (4, 3)


def test_bptt_with_surrogate_lowers_the_loss_of_a_weighted_net():
    torch.manual_seed(0)
    net = TutorialNet(NEURONS["weighted"], num_steps=8)
    x = torch.rand(8, 32, 8) * 2
    y = torch.randint(0, 3, (32,))
    opt = torch.optim.Adam(net.parameters(), lr=2e-2)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(15):
        _, mem = net(x)
        loss = loss_fn(mem.sum(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert net.fc1.weight.grad is not None and net.fc1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", NEURONS)
@pytest.mark.parametrize("how", ["reset_mem", "init_leaky", "sw.reset", "utils.reset"])
def test_reset_mid_sequence_then_rerun_gives_the_same_spikes(kind, how):
    torch.manual_seed(1)
    net = sequential_net(NEURONS[kind])
    data = torch.rand(10, 2, 1, 8, 8) * 3

    def run(steps):
        return torch.stack([net(data[t])[0] for t in range(steps)])

    sw.reset(net)
    first = run(10)
    sw.reset(net)
    run(5)  # stop half-way
    if how in ("reset_mem", "init_leaky"):
        for m in net.modules():
            if isinstance(m, snn.Leaky):
                getattr(m, how)()
    elif how == "sw.reset":
        sw.reset(net)
    else:
        utils.reset(net)
    assert torch.equal(run(10), first)


@pytest.mark.parametrize("kind", NEURONS)
def test_detach_hidden_keeps_the_clock_and_shape_change_restarts_it(kind):
    neuron = NEURONS[kind](init_hidden=True)
    x = torch.ones(2, 3)
    for _ in range(3):
        neuron(x)
    assert neuron.step.item() == 3
    snn.Leaky.detach_hidden()
    neuron(x)
    assert neuron.step.item() == 4
    neuron(torch.ones(5, 3))  # new shape: a new sequence
    assert neuron.step.item() == 1


def test_package_reset_touches_only_the_given_net():
    a = sw.WeightedLeaky(init_hidden=True)
    b = sw.WeightedLeaky(init_hidden=True)
    x = torch.full((1, 2), 0.5)  # below threshold: the membranes stay charged
    a(x)
    b(x)
    sw.reset(nn.Sequential(nn.Sequential(a)))  # nested: found recursively
    assert a.step.item() == 0 and torch.all(a.mem == 0)
    assert b.step.item() == 1 and torch.any(b.mem != 0)


@pytest.mark.parametrize("kind", NEURONS)
def test_mem_with_init_hidden_raises_type_error(kind):
    neuron = NEURONS[kind](init_hidden=True)
    with pytest.raises(TypeError, match="init_hidden"):
        neuron(torch.ones(1), torch.zeros(1))


def test_state_dict_round_trip():
    src = nn.Sequential(
        nn.Linear(3, 2, bias=False),
        sw.RadixLeaky(num_bits=5, shift=2, bias=torch.tensor([3.0, -1.0]), init_hidden=True),
        sw.WeightedLeaky(num_phases=3, beta=0.9, learn_beta=True, learn_threshold=True,
                         init_hidden=True),
    )
    src[2].threshold.data.fill_(0.7)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst = nn.Sequential(
        nn.Linear(3, 2, bias=False),
        sw.RadixLeaky(num_bits=5, bias=torch.zeros(2), init_hidden=True),
        sw.WeightedLeaky(num_phases=3, beta=0.5, learn_beta=True, learn_threshold=True,
                         init_hidden=True),
    )
    dst.load_state_dict(torch.load(buf))
    assert dst[1].shift.item() == 2 and dst[1].bias.tolist() == [3.0, -1.0]
    assert dst[2].threshold.item() == pytest.approx(0.7)
    x = torch.randint(0, 2, (4, 3)).float()
    sw.reset(src)
    sw.reset(dst)
    for _ in range(6):
        assert torch.equal(src(x), dst(x))


@pytest.mark.parametrize("kind", NEURONS)
def test_torch_compile_full_graph_matches_eager(kind):
    torch._dynamo.reset()
    compiled_neuron = NEURONS[kind](init_hidden=True)
    eager_neuron = NEURONS[kind](init_hidden=True)
    step = torch.compile(compiled_neuron, fullgraph=True)  # fails on any graph break
    x = torch.randint(-2, 3, (3, 4)).float()
    for _ in range(2):
        sw.reset(compiled_neuron)
        sw.reset(eager_neuron)
        for _ in range(9):
            assert torch.equal(step(x), eager_neuron(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", NEURONS)
def test_cuda_matches_cpu(kind):
    cpu = sequential_net(NEURONS[kind])
    gpu = sequential_net(NEURONS[kind])
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    data = torch.rand(8, 2, 1, 8, 8) * 3
    spk_cpu, _ = run_sequential(cpu, data)
    spk_gpu, _ = run_sequential(gpu, data.cuda())
    assert torch.equal(spk_cpu, spk_gpu.cpu())


@pytest.mark.parametrize("kind", NEURONS)
def test_whole_neuron_pickles_with_default_surrogate(kind):
    neuron = NEURONS[kind](init_hidden=True)
    buf = io.BytesIO()
    torch.save(neuron, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    x = torch.ones(2, 3)
    sw.reset(neuron)
    sw.reset(loaded)
    assert torch.equal(neuron(x), loaded(x))
