import torch

from core.data.transforms import eval_transform, train_transform

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


def test_a_square_upload_is_padded_not_stretched():
    """A 224x224 crop keeps its shape: black bands left and right, the content a 150x150 square."""
    tf = eval_transform((150, 200), (0.0,) * 3, (1.0,) * 3)
    square = torch.full((3, 224, 224), 200, dtype=torch.uint8)
    out = tf(square)
    assert out.shape == (3, 150, 200)
    assert out[:, :, :20].abs().max() < 0.01 and out[:, :, -20:].abs().max() < 0.01  # padding
    assert (out[:, :, 30:170] - 200 / 255).abs().max() < 0.01  # the image, unstretched in the middle
    stretched = eval_transform((150, 200), (0.0,) * 3, (1.0,) * 3, fit="stretch")(square)
    assert (stretched - 200 / 255).abs().max() < 0.01  # the old behaviour fills the frame


def test_content_box_inverts_the_padding():
    from core.data.transforms import content_box

    assert content_box(450, 600, (150, 200)) == (0.0, 1.0, 0.0, 1.0)  # HAM10000's own ratio: untouched
    top, bottom, left, right = content_box(224, 224, (150, 200))
    assert (top, bottom) == (0.0, 1.0) and abs(left - 0.125) < 1e-9 and abs(right - 0.875) < 1e-9
    top, bottom, left, right = content_box(100, 400, (150, 200))  # a wide strip: bands above and below
    assert abs(top - (1 - 1 / 3) / 2) < 1e-9 and (left, right) == (0.0, 1.0)


def test_the_transposed_crop_is_gone_and_crops_keep_the_field_of_view():
    """No augmentation turns the image portrait (which broke the random crop); the crop keeps 4:3."""
    from torchvision.transforms import v2

    tf = train_transform((150, 200), MEAN, STD)
    crops = [t for t in tf.transforms if isinstance(t, v2.RandomResizedCrop)]
    assert len(crops) == 1 and crops[0].scale == (0.35, 1.0)
    assert not any(isinstance(t, v2.RandomApply) and any(isinstance(u, v2.Lambda) for u in t.transforms)
                   for t in tf.transforms)
    torch.manual_seed(0)
    image = torch.zeros(3, 150, 200, dtype=torch.uint8)
    draws = [v2.RandomResizedCrop.get_params(image, list(crops[0].scale), list(crops[0].ratio)) for _ in range(500)]
    areas = [h * w / (150 * 200) for _, _, h, w in draws]
    ratios = [w / h for _, _, h, w in draws]
    assert min(areas) < 0.5 and max(areas) > 0.9  # real scale jitter, not one fixed fallback crop
    assert all(200 / 150 * 0.85 - 0.02 <= r <= 200 / 150 / 0.85 + 0.02 for r in ratios)


def test_a_square_model_sees_one_geometry_in_training_and_evaluation():
    """The paper CNN (128x128) gets a 4:3 image padded to a square in training as in evaluation, never
    cropped near-square in one and squashed or padded in the other."""
    from torchvision.transforms import v2

    from core.data.transforms import fit_to_input

    image = torch.full((3, 150, 200), 200, dtype=torch.uint8)
    framed = v2.Compose(fit_to_input((128, 128)))(image)
    assert framed.shape == (3, 200, 200)
    assert framed[:, :25].max() == 0 and framed[:, -25:].max() == 0 and framed[:, 25:175].min() == 200
    train_steps = train_transform((128, 128), MEAN, STD).transforms
    assert torch.equal(v2.Compose(train_steps[:2])(image), framed)
    evaluated = eval_transform((128, 128), (0.0,) * 3, (1.0,) * 3)(image)
    assert evaluated[:, :12].abs().max() < 0.01 and (evaluated[:, 20:108] - 200 / 255).abs().max() < 0.01
    # HAM10000's own 4:3 reaches a 4:3 model untouched
    assert torch.equal(v2.Compose(fit_to_input((150, 200)))(image), image)
