"""Digital abdomen phantoms in Hounsfield units: noise-free body CT for training (issue 14).

Offline real CT is head and neck (docs/ct-physics.md, "Real CT that can be had offline"); the
calibrated `ct-lowdose` trained on it harms mild noise on a body slice, whose size, fat and
low-contrast organs it never saw.  These phantoms give it bodies: an elliptical trunk with a
subcutaneous fat ring, muscle, liver, spleen, kidneys, aorta, a vertebra with cortex and
cancellous bone, ribs, bowel loops holding air, fluid or mottled content, low-contrast lesions and
organ texture (smoothed random fields, so texture is anatomy and never noise), on a patient
table.  Values follow routine abdominal CT (fat about -100 HU, muscle 50, liver 50-110 with or
without contrast, bone 150-1000).  They are exactly noise-free, so the simulated noise is the only
noise.  Every draw comes from the generator passed in.
"""

from __future__ import annotations

import numpy as np

AIR_HU = -1000.0
FAT_HU = -100.0


def _ellipse(
    shape: tuple[int, int],
    centre: tuple[float, float],
    radii: tuple[float, float],
    angle: float = 0.0,
) -> np.ndarray:
    """Boolean mask of a rotated ellipse; centre (row, column) and radii (down, across) in px."""
    rows, columns = np.ogrid[: shape[0], : shape[1]]
    down, across = rows - centre[0], columns - centre[1]
    cosine, sine = np.cos(angle), np.sin(angle)
    along = across * cosine + down * sine
    normal = -across * sine + down * cosine
    return (along / radii[1]) ** 2 + (normal / radii[0]) ** 2 <= 1.0


def _texture(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field with unit standard deviation and correlation length `scale` px."""
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), scale, mode="reflect")
    return field / max(float(field.std()), 1e-12)


def abdomen_phantom(
    rng: np.random.Generator, side: int = 512, detail: np.random.Generator | None = None
) -> np.ndarray:
    """One (side, side) float32 abdomen slice in HU, air around it.

    The trunk spans 62-92 % of the field across, so at the 0.5-1.0 mm pixels the training draws
    it is 16-47 cm wide: child to large adult, the grid's abdomen (0.86 mm) inside the range.
    With `detail`, a generator of its own, the slice also gets anatomy at the scale of a pixel or
    two (`_fine_detail`); the rest of the slice is the one `rng` alone draws.
    """
    from scipy.ndimage import gaussian_filter

    shape = (side, side)
    image = np.full(shape, AIR_HU)
    across = side * rng.uniform(0.31, 0.46)  # half-width of the trunk, px
    down = across * rng.uniform(0.62, 0.82)
    centre = (
        side / 2 + rng.uniform(-0.03, 0.03) * side,
        side / 2 + rng.uniform(-0.03, 0.03) * side,
    )
    # A trunk outline that is not a perfect ellipse: low-order harmonics on the radius.
    rows, columns = np.mgrid[: shape[0], : shape[1]]
    theta = np.arctan2((rows - centre[0]) / down, (columns - centre[1]) / across)
    wobble = 1.0 + sum(
        rng.uniform(-0.025, 0.025) * np.cos(order * theta + rng.uniform(0, 2 * np.pi))
        for order in range(2, 5)
    )
    radius = np.hypot((rows - centre[0]) / down, (columns - centre[1]) / across)
    body = radius <= wobble
    fat_depth = rng.uniform(0.05, 0.16)  # subcutaneous fat, as a fraction of the radius
    muscle_depth = fat_depth + rng.uniform(0.03, 0.07)
    image[body] = FAT_HU + 8.0 * _texture(shape, 1.5, rng)[body]
    wall = radius <= wobble * (1 - fat_depth)
    image[wall] = 50.0 + rng.uniform(-5, 5)
    cavity = radius <= wobble * (1 - muscle_depth)
    # Visceral fat and soft tissue interleaved: a thresholded smooth field.
    mixture = _texture(shape, rng.uniform(6, 14), rng)
    soft = mixture > rng.uniform(-0.6, 0.4)
    image[cavity] = np.where(soft, 35.0 + 6.0 * _texture(shape, 2.0, rng), FAT_HU + 10.0)[cavity]
    inner = (down * (1 - muscle_depth), across * (1 - muscle_depth))  # cavity half-axes, px

    def place(
        frac_row: float, frac_col: float, frac_radii: tuple[float, float], angle: float = 0.0
    ) -> np.ndarray:
        """An ellipse inside the cavity, position and radii as fractions of its half-axes."""
        mask = _ellipse(
            shape,
            (centre[0] + frac_row * inner[0], centre[1] + frac_col * inner[1]),
            (frac_radii[0] * inner[0], frac_radii[1] * inner[1]),
            angle,
        )
        return mask & cavity

    contrast = rng.random() < 0.6  # portal-venous phase, or no contrast medium
    side_sign = 1.0 if rng.random() < 0.85 else -1.0  # situs: liver on the image's left
    liver = place(
        rng.uniform(-0.35, -0.05),
        -side_sign * rng.uniform(0.35, 0.55),
        (rng.uniform(0.4, 0.6), rng.uniform(0.3, 0.45)),
        rng.uniform(-0.5, 0.5),
    )
    liver_hu = rng.uniform(95, 120) if contrast else rng.uniform(50, 65)
    image[liver] = liver_hu + rng.uniform(2, 6) * _texture(shape, rng.uniform(1.5, 3), rng)[liver]
    vessels = _texture(shape, 2.5, rng) > 2.0  # portal and hepatic vessels: bright or dark
    image[liver & vessels] += 40.0 if contrast else -15.0
    for _ in range(int(rng.integers(0, 4))):  # low-contrast lesions, 5-25 mm at ~0.7 mm pixels
        lesion = place(
            rng.uniform(-0.35, 0.0),
            -side_sign * rng.uniform(0.3, 0.6),
            (rng.uniform(0.02, 0.08),) * 2,
        )
        image[lesion & liver] = liver_hu + rng.uniform(-60, 25)
    spleen = place(
        rng.uniform(-0.35, 0.0),
        side_sign * rng.uniform(0.5, 0.7),
        (rng.uniform(0.15, 0.3), rng.uniform(0.1, 0.18)),
        rng.uniform(-0.8, 0.8),
    )
    image[spleen] = (rng.uniform(100, 130) if contrast else rng.uniform(40, 55)) + 4.0 * _texture(
        shape, 2.0, rng
    )[spleen]
    for sign in (-1.0, 1.0):  # kidneys: cortex around medulla and a fat-filled sinus
        kidney_centre = (rng.uniform(0.1, 0.35), sign * rng.uniform(0.3, 0.45))
        radii = (rng.uniform(0.16, 0.24), rng.uniform(0.1, 0.15))
        angle = sign * rng.uniform(0.2, 0.6)
        cortex = place(*kidney_centre, radii, angle)
        image[cortex] = rng.uniform(150, 200) if contrast else rng.uniform(30, 40)
        medulla = place(*kidney_centre, (radii[0] * 0.65, radii[1] * 0.6), angle)
        image[medulla] = rng.uniform(80, 120) if contrast else rng.uniform(25, 35)
        sinus = place(
            kidney_centre[0],
            kidney_centre[1] - sign * radii[1] * 0.4,
            (radii[0] * 0.3, radii[1] * 0.3),
        )
        image[sinus] = FAT_HU + 20.0
    spine_row = rng.uniform(0.45, 0.62)  # vertebral body, posterior in the cavity
    vertebra = place(
        spine_row, rng.uniform(-0.03, 0.03), (rng.uniform(0.14, 0.2), rng.uniform(0.12, 0.16))
    )
    image[vertebra] = rng.uniform(600, 1000)  # cortex
    marrow = place(spine_row, 0.0, (0.11, 0.1))
    image[marrow & vertebra] = (
        rng.uniform(150, 300) + 25.0 * _texture(shape, 1.0, rng)[marrow & vertebra]
    )
    arch = place(spine_row + 0.28, 0.0, (0.1, 0.05))
    for sign in (-1.0, 1.0):  # psoas beside the vertebra, paraspinal muscles behind it
        psoas = place(
            spine_row - 0.05, sign * rng.uniform(0.2, 0.28), (0.14, rng.uniform(0.08, 0.12))
        )
        image[psoas & ~vertebra] = 50.0 + 3.0 * _texture(shape, 1.5, rng)[psoas & ~vertebra]
        back = (
            _ellipse(
                shape,
                (centre[0] + (spine_row + 0.33) * inner[0], centre[1] + sign * 0.19 * inner[1]),
                (0.2 * inner[0], rng.uniform(0.13, 0.18) * inner[1]),
            )
            & wall
        )
        image[back & ~vertebra] = 50.0 + 3.0 * _texture(shape, 1.5, rng)[back & ~vertebra]
    image[arch] = rng.uniform(500, 900)
    aorta = place(
        spine_row - 0.25,
        rng.uniform(-0.12, -0.04),
        (0.06, 0.06) if rng.random() < 0.9 else (0.09, 0.09),
    )
    image[aorta] = rng.uniform(150, 300) if contrast else rng.uniform(35, 50)
    for _ in range(int(rng.integers(6, 14))):  # bowel loops: wall, then air, fluid or faeces
        loop_radius = rng.uniform(0.05, 0.13)
        loop_centre = (rng.uniform(-0.2, 0.5), rng.uniform(-0.6, 0.6))
        loop = place(
            *loop_centre, (loop_radius, loop_radius * rng.uniform(0.7, 1.4)), rng.uniform(0, np.pi)
        )
        loop &= ~(liver | spleen | vertebra | aorta)
        image[loop] = 45.0 + (30.0 if contrast else 0.0)
        lumen = place(
            *loop_centre, (loop_radius * 0.75, loop_radius * 0.75 * rng.uniform(0.7, 1.4))
        )
        lumen &= loop
        content = rng.choice(3)
        if content == 0:
            image[lumen] = AIR_HU + rng.uniform(0, 100)
        elif content == 1:
            image[lumen] = rng.uniform(0, 25)
        else:  # faeces: air bubbles in a soft mottled matrix
            mottle = _texture(shape, 1.2, rng)
            image[lumen] = np.where(mottle > 1.0, -700.0, 20.0 + 30.0 * mottle)[lumen]
    ribs = int(rng.integers(4, 10))  # rib cross-sections in the wall
    for angle in rng.uniform(-np.pi, 0.2, size=ribs):
        place_radius = 1 - (fat_depth + muscle_depth) / 2
        row = centre[0] + np.sin(angle) * down * place_radius * wobble.mean()
        column = centre[1] + np.cos(angle) * across * place_radius * wobble.mean()
        rib = _ellipse(
            shape, (row, column), (rng.uniform(3, 6), rng.uniform(5, 10)), angle + np.pi / 2
        )
        image[rib & body] = rng.uniform(300, 700)
    if rng.random() < 0.8:  # the patient table under the back: a carbon cradle, sides higher
        lowest = np.nonzero(body[:, int(centre[1])])[0].max()
        top = lowest + rng.uniform(1, 6)
        curve = (columns - centre[1]) ** 2 / (across * 8.0)
        table = (rows >= top - curve) & (rows <= top - curve + rng.uniform(4, 9))
        table &= (np.abs(columns - centre[1]) <= across * 1.15) & ~body
        image[table] = rng.uniform(100, 400)
    if detail is not None:
        _fine_detail(image, body, cavity, contrast, detail)
    # Partial volume: edges a reconstruction would show, then the stored HU range.
    image = gaussian_filter(image, rng.uniform(0.5, 0.9), mode="nearest")
    return np.clip(image, AIR_HU, 1500.0).astype(np.float32)


def _fine_detail(
    image: np.ndarray,
    body: np.ndarray,
    cavity: np.ndarray,
    contrast: bool,
    rng: np.random.Generator,
) -> None:
    """Add, in place, the anatomy a real abdomen shows at the scale of one or two pixels.

    At mild noise (a few HU) this is what a denoiser must keep and what BM3D keeps: mesenteric
    strands and septa crossing the fat (the thin level sets of a smooth field: curved lines
    about a pixel wide, 40-90 HU above fat), small vessels (dots of 0.7-2 px radius, bright with
    contrast medium), and parenchymal texture of 3-10 HU correlated over under a pixel.  Without
    it every fine feature of the other phantoms is smooth, and a network may learn that anything
    fine and faint is noise.
    """
    shape = image.shape
    fat = cavity & (image < -50)
    strands = np.abs(_texture(shape, rng.uniform(5, 10), rng)) < rng.uniform(0.05, 0.1)
    image[strands & fat] += rng.uniform(40, 90)
    rows, columns = np.nonzero(cavity)
    for index in rng.choice(rows.size, size=int(rng.integers(30, 150)), replace=False):
        radius = rng.uniform(0.7, 2.0)
        vessel = _ellipse(shape, (rows[index], columns[index]), (radius, radius)) & cavity
        image[vessel] = rng.uniform(150, 300) if contrast else rng.uniform(35, 55)
    tissue = body & (image > -50) & (image < 300)
    image[tissue] += rng.uniform(3, 10) * _texture(shape, rng.uniform(0.6, 1.0), rng)[tissue]
