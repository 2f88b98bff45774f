import torch

from core.transforms import eval_transform, train_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_train_transform_output_is_normalised_float_at_size():
    torch.manual_seed(0)
    tf = train_transform((150, 200), MEAN, STD)
    image = torch.randint(0, 256, (3, 150, 200), dtype=torch.uint8)
    outs = [tf(image) for _ in range(8)]
    assert all(o.shape == (3, 150, 200) and o.dtype == torch.float32 for o in outs)
    assert not all(torch.equal(outs[0], o) for o in outs[1:])  # it really augments


def test_eval_transform_keeps_the_whole_field_and_turns_portraits():
    tf = eval_transform((150, 200), MEAN, STD)
    portrait = torch.zeros(3, 400, 300, dtype=torch.uint8)
    portrait[:, :10, :] = 255  # a bright band along the top edge of the portrait
    out = tf(portrait)
    assert out.shape == (3, 150, 200)
    # after turning sideways the band lies along the left edge, whole height
    assert out[0, :, :3].mean() > out[0, :, 10:].mean() + 1
    assert torch.equal(tf(portrait), tf(portrait))  # deterministic


def test_eval_transform_resizes_any_size():
    tf = eval_transform((150, 200), MEAN, STD)
    for h, w in ((224, 224), (450, 600), (3000, 4000)):
        assert tf(torch.zeros(3, h, w, dtype=torch.uint8)).shape == (3, 150, 200)
