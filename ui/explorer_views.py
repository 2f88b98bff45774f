"""Dataset explorer sections: the charts, the data-quality panel, the image and transformation galleries.

Each function draws one section of app_pages/2_Dataset_Explorer.py from a loaded `Source` and the
sidebar filters; the numbers come from `core.eda.tables`, `core.eda.gallery` and
`core.eda.dataset_stats`, the figures from `core.figures.eda`.
"""
from __future__ import annotations

import streamlit as st

from core.config import IMAGENET_MEAN, IMAGENET_STD
from core.data.datasets import read_rgb
from core.eda import tables as eda
from core.eda.dataset_stats import COLOUR_MAX_SIDE, MAX_COLOUR_IMAGES
from core.eda.gallery import augmentation_preview, paper_gallery
from core.errors import InputError
from core.figures import eda as eda_figures
from ui.explorer import Source, image_colour, unreadable_images

NO_IMAGES = "These need the images; this source has metadata only ({why})."


def _chart(fig, caption: str) -> None:
    st.plotly_chart(fig, config={"displaylogo": False})
    st.caption(caption)


def _no_images_why(source: Source) -> str:
    if source.stats is not None:
        return "statistics stored with the model"
    return "ISIC 2020 train.csv comes without images" if source.layout == "isic2020" else "no image files found"


def charts(source: Source, filters: eda.Filters) -> None:
    """The ten charts of the second paper's exploratory analysis, all filtered."""
    cube = eda.apply_filters(source.cube, filters)
    frame = eda.apply_filters(source.frame, filters) if source.frame is not None else None
    images = int(cube["n"].sum())
    st.caption(f"{images:,} images pass the filters.")
    if images == 0:
        st.warning("No image matches these filters; widen them in the sidebar.")
        return
    left, right = st.columns(2)
    with left:
        _chart(eda_figures.fig_classes(eda.class_table(cube)), eda.CAPTIONS["classes"])
        _chart(eda_figures.fig_malignancy_by_sex(eda.malignancy_by_sex_table(cube)), eda.CAPTIONS["malignancy_by_sex"])
    with right:
        _chart(eda_figures.fig_sex(eda.sex_table(cube)), eda.CAPTIONS["sex"])
        _chart(eda_figures.fig_sites(eda.site_table(cube)), eda.CAPTIONS["sites"])
    targets = ["melanoma"] if source.layout == "isic2020" else ["melanoma", "malignant"]
    target = st.radio("Count by site and sex", targets, horizontal=True, key="explorer_site_target")
    _chart(eda_figures.fig_site_sex(eda.site_sex_table(cube, target), target), eda.CAPTIONS["site_sex"].format(target=target))
    left, right = st.columns(2)
    with left:
        _chart(eda_figures.fig_age(eda.age_table(cube)), eda.CAPTIONS["age"])
        _chart(eda_figures.fig_age(eda.age_table(cube, "sex"), "sex"), eda.CAPTIONS["age_by_sex"])
    with right:
        _chart(eda_figures.fig_age(eda.age_table(cube, "group"), "group", percent=True), eda.CAPTIONS["age_by_group"])
        _colour_chart(source, frame, filters)
    left, right = st.columns(2)
    with left:
        what = "ISIC 2020 diagnosis" if source.layout == "isic2020" else "confirmation type"
        caption = eda.CAPTIONS["dx_type"] if source.layout != "isic2020" else (
            "The recorded diagnosis within each class (ISIC 2020 keeps it in place of a confirmation type).")
        _chart(eda_figures.fig_dx_type(eda.dx_type_table(cube)).update_layout(legend_title_text=what), caption)
    with right:
        _lesion_chart(source, frame)


def _colour_chart(source: Source, frame, filters: eda.Filters) -> None:
    if source.stats is not None:
        sums = source.stats.colour
        note = " From the stored statistics: only the diagnosis filter applies here."
    elif source.has_images:
        hists, ok, _ = image_colour(source)
        idx = frame.index.to_numpy()
        sums = eda.colour_sums(hists[idx], ok[idx], frame["dx"])
        note = ""
    else:
        st.info("Colour intensity chart: " + NO_IMAGES.format(why=_no_images_why(source)))
        return
    table = eda.colour_table(sums, filters.dxs)
    if table.empty:
        st.info("No decoded image passes the filters, so there is no colour chart.")
        return
    counts = table.groupby("group")["images"].first()
    detail = ", ".join(f"{n:,} {g}" for g, n in counts.items())
    _chart(eda_figures.fig_colour(table), f"{eda.CAPTIONS['colour']} Over {detail} images "
           f"(all images up to {MAX_COLOUR_IMAGES:,}, else a seeded sample; decoded at most {COLOUR_MAX_SIDE} px)."
           f"{note}")


def _lesion_chart(source: Source, frame) -> None:
    if frame is not None:
        per_lesion, note = eda.images_per_lesion(frame), ""
    else:
        per_lesion, note = source.stats.per_lesion, " (stored statistics: filters do not apply)"
    summary = eda.lesion_summary(per_lesion)
    fig = eda_figures.fig_lesions(per_lesion).update_layout(xaxis_title=f"images of the same {source.group_word[:-1]}",
                                                    yaxis_title=source.group_word)
    share = 100.0 * summary["images_in_multi_image_lesions"] / max(summary["images"], 1)
    _chart(fig, f"{summary['multi_image_lesions']:,} of {summary['lesions']:,} {source.group_word} have more than "
           f"one image, holding {summary['images_in_multi_image_lesions']:,} images ({share:.0f}%): splits must be "
           f"grouped by {source.group_word[:-1]}, or near-copies leak between train and test{note}.")


def quality(source: Source) -> None:
    """Rows, lesions, missing values, duplicates, unreadable images, images per lesion, imbalance."""
    if source.stats is not None:
        summary = source.stats.quality
        st.caption("From the statistics stored with the model (" + source.stats.meta.get("rows_used", "") + ").")
    else:
        unreadable = unreadable_images(source) if source.has_images else None
        summary = eda.quality_summary(source.frame, source.duplicates, unreadable)
        st.caption("For the whole dataset as loaded (the sidebar filters do not apply here).")
    cols = st.columns(4)
    cols[0].metric("Rows (images)", f"{summary['rows']:,}")
    cols[1].metric(source.group_word.capitalize(), f"{summary['lesions']:,}")
    cols[2].metric("Duplicate rows dropped", f"{summary['duplicate_rows']:,}")
    unreadable = summary["unreadable_images"]
    cols[3].metric("Unreadable images", "not checked" if unreadable is None else f"{unreadable:,}",
                   help="Image files that exist but fail to decode; missing files are counted under missing values.")
    cols = st.columns(3)
    cols[0].metric(f"Images per {source.group_word[:-1]} (mean)", f"{summary['images_per_lesion_mean']:.2f}")
    cols[1].metric(f"Images per {source.group_word[:-1]} (max)", f"{summary['images_per_lesion_max']:,}")
    cols[2].metric("Class imbalance (largest / smallest)", f"{summary['imbalance_ratio']:.1f} : 1",
                   help=f"{eda.class_name(summary['largest_class'])} vs {eda.class_name(summary['smallest_class'])}")
    st.dataframe(eda.missing_table(summary), hide_index=True,
                 column_config={"percent": st.column_config.NumberColumn("percent", format="%.1f%%")})
    st.caption("Missing values per column: empty ages, sex or site recorded as unknown, and rows whose image file "
               "is absent.")


def _needs_images(source: Source) -> bool:
    if source.has_images:
        return True
    st.info(NO_IMAGES.format(why=_no_images_why(source)) + " Point the explorer at a HAM10000 folder to see them.")
    return False


def gallery(source: Source, filters: eda.Filters) -> None:
    """A few images per diagnosis with age, sex and site."""
    if not _needs_images(source):
        return
    seed = st.number_input("Sample", min_value=0, value=0, step=1, key="explorer_gallery_seed",
                           help="Change to draw other images.")
    rows = eda.gallery_rows(eda.apply_filters(source.frame, filters), per_class=3, seed=int(seed))
    st.caption("Three images per diagnosis (seeded random draw among those passing the filters).")
    for dx, picks in rows.groupby("dx", sort=False):
        st.markdown(f"**{eda.class_name(dx)}** ({eda.group_of(picks['dx']).iloc[0]})")
        for col, (_, row) in zip(st.columns(3), picks.iterrows()):
            age = "age ?" if row["age_missing"] else f"{row['age']:.0f} y"
            col.image(read_rgb(row["image_path"]), caption=f"{row['image_id']}: {age}, {row['sex']}, {row['site']}")


def _input_spec(image_shape: tuple[int, ...]) -> tuple[list[int], list[float], list[float], str]:
    """Input size, mean and std from the default model's card (what training used)."""
    from ui.loaders import get_card

    try:
        spec = get_card()["input"]
        return list(spec["size"]), list(spec["mean"]), list(spec["std"]), "the default model's card"
    except (InputError, KeyError, TypeError, OSError):
        return list(image_shape[:2]), list(IMAGENET_MEAN), list(IMAGENET_STD), "the image itself (no model card found)"


def transformations(source: Source, filters: eda.Filters) -> None:
    """The paper's transformation gallery and the real training augmentations for one image."""
    if not _needs_images(source):
        return
    rows = eda.gallery_rows(eda.apply_filters(source.frame, filters), per_class=3,
                            seed=int(st.session_state.get("explorer_gallery_seed", 0)))
    if rows.empty:
        st.warning("No image matches these filters.")
        return
    labels = {f"{r.image_id} ({eda.class_name(r.dx)})": r.image_path for r in rows.itertuples()}
    chosen = st.selectbox("Image", list(labels), key="explorer_image")
    image = read_rgb(labels[chosen])
    c = st.columns(4)
    hue = c[0].slider("Hue shift (degrees)", -90, 90, 20, key="explorer_hue")
    sat = c[1].slider("Saturation", 0.0, 2.0, 1.3, 0.1, key="explorer_saturation")
    bright = c[2].slider("Brightness", 0.0, 2.0, 1.1, 0.1, key="explorer_brightness")
    blur = c[3].slider("Gaussian blur sigma", 0.5, 5.0, 2.0, 0.5, key="explorer_blur")
    panels = paper_gallery(image, hue, sat, bright, blur)
    st.caption("The second paper's transformations: visual aids, not what the model is trained on.")
    for col, (title, panel) in zip(st.columns(3) + st.columns(3), panels.items()):
        col.image(panel, caption=title)
    st.subheader("Training augmentations")
    size, mean, std, origin = _input_spec(image.shape)
    seed = st.number_input("Random draw", min_value=0, value=0, step=1, key="explorer_aug_seed")
    draws = augmentation_preview(image, 6, size, mean, std, seed=int(seed))
    st.caption(f"Six random draws of core.data.transforms.train_transform at {size[0]}x{size[1]} (size from {origin}): "
               "flips, affine shift/scale/rotate, random resized crop, colour jitter, blur, greyscale.")
    for col, draw in zip(st.columns(3) + st.columns(3), draws):
        col.image(draw)
