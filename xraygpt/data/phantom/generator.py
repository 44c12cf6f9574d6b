"""Phantom chest radiographs: synthetic images whose findings and report are known.

No real chest X-ray can ship with the code, yet a newcomer must see the whole
pipeline train, evaluate and chat in minutes. This module draws grayscale
frontal radiograph-like images (body outline, lungs with vascular markings,
mediastinum, heart, diaphragm domes, ribs, clavicles, noise and exposure
variation) with a random set of findings, writes a radiology-style report that
states exactly what was drawn, and the CheXpert label vector. The output has
the OpenI layout (``image/<id>.png`` and ``filter_cap.json`` with splits and
labels; registered as the builder ``phantom``), so the normal data path
reads it. It also trains the tiny recipe's tokenizer on the training reports
(``tokenizer/``): the tiny LLM's vocabulary, and so its cost, stays small.

    xraygpt phantom --out dataset/phantom --n 3000 --seed 0

Every image is a pure function of ``(seed, index)``: the data set is the same
on every machine and images can be drawn in any order or in parallel.

Conventions: images are in the radiological orientation (the patient's right
is on the image's left). Geometry is in normalised coordinates, x and y in
[0, 1] from the top-left corner, so findings keep their size at any
resolution.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from xraygpt.common.constants import CHEXPERT_OBSERVATIONS, PHANTOM_FINDINGS

SEVERITIES = ("small", "moderate", "large")
CARDIOMEGALY_GRADES = ("mild", "moderate", "marked")
SIDES = ("right", "left")
# Lobes by side: the left lung has no middle lobe.
LOBES = {"right": ("upper", "middle", "lower"), "left": ("upper", "lower")}
ZONES = ("upper", "mid", "lower")
DEVICES = ("endotracheal tube", "enteric tube", "central venous catheter", "pacemaker")

DEFAULT_SIZE = 128
DEFAULT_PROMPT_FILE = "prompts/alignment_chest_xray.txt"
DEFAULT_SPLITS = (0.8, 0.1, 0.1)
P_NORMAL = 0.2  # share of cases drawn without any finding
P_FINDING = 0.3  # chance of each finding in an abnormal case


@dataclass(frozen=True)
class PhantomCase:
    """What one phantom shows; ``None`` / empty means the finding is absent."""

    cardiomegaly: str | None = None  # grade: mild / moderate / marked
    effusion: tuple[str, str] | None = None  # (right | left | bilateral, severity)
    pneumothorax: tuple[str, str] | None = None  # (side, severity)
    consolidation: tuple[str, str] | None = None  # (side, lobe)
    lesion: tuple[str, str, str, float] | None = None  # (nodule | mass, side, zone, size cm)
    devices: tuple[str, ...] = field(default_factory=tuple)

    def present(self) -> dict[str, bool]:
        return {
            "Cardiomegaly": self.cardiomegaly is not None,
            "Pleural Effusion": self.effusion is not None,
            "Pneumothorax": self.pneumothorax is not None,
            "Consolidation": self.consolidation is not None,
            "Lung Lesion": self.lesion is not None,
            "Support Devices": bool(self.devices),
        }

    def labels(self) -> dict[str, int]:
        """The label vector over all 14 CheXpert observations (1 = positive)."""
        present = self.present()
        labels = {name: 0 for name in CHEXPERT_OBSERVATIONS}
        for name, on in present.items():
            labels[name] = int(on)
        labels["No Finding"] = int(not any(present.values()))
        return labels


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def sample_case(rng: np.random.Generator) -> PhantomCase:
    """Draw which findings a phantom shows, with their side, location and severity."""
    if rng.random() < P_NORMAL:
        return PhantomCase()
    while True:
        on = rng.random(len(PHANTOM_FINDINGS)) < P_FINDING
        if on.any():
            break
    kwargs: dict = {}
    if on[0]:
        kwargs["cardiomegaly"] = _pick(rng, CARDIOMEGALY_GRADES)
    if on[1]:
        kwargs["effusion"] = (_pick(rng, (*SIDES, "bilateral")), _pick(rng, SEVERITIES))
    if on[2]:
        kwargs["pneumothorax"] = (_pick(rng, SIDES), _pick(rng, SEVERITIES))
    if on[3]:
        side = _pick(rng, SIDES)
        kwargs["consolidation"] = (side, _pick(rng, LOBES[side]))
    if on[4]:
        kind = "nodule" if rng.random() < 0.5 else "mass"
        # A nodule is up to 3 cm by definition; larger is a mass.
        size = float(rng.uniform(1.5, 2.5) if kind == "nodule" else rng.uniform(4.0, 6.5))
        kwargs["lesion"] = (kind, _pick(rng, SIDES), _pick(rng, ZONES), round(size, 1))
    if on[5]:
        count = 1 if rng.random() < 0.7 else 2
        order = rng.permutation(len(DEVICES))[:count]
        kwargs["devices"] = tuple(DEVICES[i] for i in sorted(order))
    return PhantomCase(**kwargs)


# --------------------------------------------------------------------------- drawing


def _soft_inside(dist: np.ndarray, edge: float) -> np.ndarray:
    """1 inside (dist < 0), 0 outside, with a smooth edge about ``edge`` wide."""
    return 1.0 / (1.0 + np.exp(np.clip(dist / edge, -30.0, 30.0)))


def _superellipse(x, y, cx, cy, ax, ay, power=2.0) -> np.ndarray:
    """Approximate signed distance to a superellipse (negative inside)."""
    if power == 2.0:
        r = np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2)
    else:
        r = (np.abs((x - cx) / ax) ** power + np.abs((y - cy) / ay) ** power) ** (1.0 / power)
    return (r - 1.0) * min(ax, ay)


def _bezier(p0, p1, p2, n: int = 10) -> np.ndarray:
    """Points along a quadratic Bezier curve: smooth tube and catheter paths."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    grid = rng.uniform(-1.0, 1.0, (cells + 1, cells + 1)).astype(np.float32)
    axes = []
    for n in shape:
        pos = np.linspace(0.0, cells, n, dtype=np.float32)
        i0 = np.minimum(pos.astype(int), cells - 1)
        axes.append((i0, pos - i0))
    (r0, rf), (c0, cf) = axes
    rows = grid[r0] * (1 - rf)[:, None] + grid[r0 + 1] * rf[:, None]
    return rows[:, c0] * (1 - cf)[None, :] + rows[:, c0 + 1] * cf[None, :]


class _Canvas:
    """The pixel grid in anatomy coordinates, with the patient's pose applied.

    Small objects (lesions, tubes, clavicles) are drawn only inside their
    bounding box: most of the drawing time would otherwise go to pixels far
    from them.
    """

    def __init__(self, size: int, angle: float, scale: float, shift: np.ndarray) -> None:
        self.size = size
        self.px = 1.0 / size
        self.edge = 0.6 / size  # soft edges keep shapes anti-aliased
        self._cos, self._sin = float(np.cos(angle)), float(np.sin(angle))
        self._scale, self._shift = float(scale), (float(shift[0]), float(shift[1]))
        v, u = np.mgrid[0:size, 0:size].astype(np.float32)
        u, v = (u + 0.5) * self.px - 0.5, (v + 0.5) * self.px - 0.5
        self.x = (self._cos * u + self._sin * v) / self._scale + 0.5 - self._shift[0]
        self.y = (-self._sin * u + self._cos * v) / self._scale + 0.5 - self._shift[1]

    def zeros(self) -> np.ndarray:
        return np.zeros((self.size, self.size), dtype=np.float32)

    def window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
        """The pixel rows and columns covering the anatomy box [x0, x1] x [y0, y1]."""
        xs = np.array([x0, x1, x0, x1]) - 0.5 + self._shift[0]
        ys = np.array([y0, y0, y1, y1]) - 0.5 + self._shift[1]
        xs, ys = xs * self._scale, ys * self._scale
        cols = (self._cos * xs - self._sin * ys + 0.5) * self.size - 0.5
        rows = (self._sin * xs + self._cos * ys + 0.5) * self.size - 0.5
        r0 = int(np.clip(np.floor(rows.min()) - 2, 0, self.size))
        r1 = int(np.clip(np.ceil(rows.max()) + 3, 0, self.size))
        c0 = int(np.clip(np.floor(cols.min()) - 2, 0, self.size))
        c1 = int(np.clip(np.ceil(cols.max()) + 3, 0, self.size))
        return slice(r0, r1), slice(c0, c1)

    def ellipse(self, cx, cy, ax, ay, power=2.0, edge=None, margin=0.0) -> np.ndarray:
        out = self.zeros()
        pad = 6 * (edge or self.edge) + margin
        win = self.window(cx - ax - pad, cy - ay - pad, cx + ax + pad, cy + ay + pad)
        dist = _superellipse(self.x[win], self.y[win], cx, cy, ax, ay, power)
        out[win] = _soft_inside(dist, edge or self.edge)
        return out

    def polyline(self, points: np.ndarray, width: float) -> np.ndarray:
        """A soft line ``width`` thick through ``points`` [K, 2]."""
        out = self.zeros()
        pad = width + 6 * self.edge
        lo, hi = points.min(axis=0) - pad, points.max(axis=0) + pad
        win = self.window(lo[0], lo[1], hi[0], hi[1])
        x, y = self.x[win], self.y[win]
        best = np.full(x.shape, np.inf, dtype=np.float32)
        for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
            dx, dy = x1 - x0, y1 - y0
            length2 = dx * dx + dy * dy + 1e-12
            t = np.clip(((x - x0) * dx + (y - y0) * dy) / length2, 0.0, 1.0)
            best = np.minimum(best, (x - x0 - t * dx) ** 2 + (y - y0 - t * dy) ** 2)
        out[win] = _soft_inside(np.sqrt(best) - width / 2, self.edge)
        return out


def render_image(
    case: PhantomCase, rng: np.random.Generator, size: int = DEFAULT_SIZE
) -> np.ndarray:
    """Draw the phantom radiograph of ``case``: a ``[size, size]`` uint8 array."""
    # Patient position: small rotation, scale and shift of the whole anatomy.
    cv = _Canvas(
        size,
        np.deg2rad(rng.uniform(-4.0, 4.0)),
        rng.uniform(0.94, 1.06),
        rng.uniform(-0.03, 0.03, 2),
    )
    x, y, px, edge = cv.x, cv.y, cv.px, cv.edge

    # Body: neck plus a torso running off the bottom of the film.
    torso = _soft_inside(
        _superellipse(x, y, 0.5, 0.66, rng.uniform(0.44, 0.48), 0.6, 2.6), 2 * edge
    )
    body = np.maximum(torso, cv.ellipse(0.5, 0.0, 0.11, 0.2, edge=2 * edge))

    # Lungs, cut below by the diaphragm domes: parabolas arching up from the
    # costophrenic angles; the right dome sits higher (the liver).
    lung_ax, lung_top = rng.uniform(0.155, 0.17), rng.uniform(0.12, 0.15)
    lung_cx = {"right": 0.5 - rng.uniform(0.18, 0.195), "left": 0.5 + rng.uniform(0.18, 0.195)}
    angle_y = {"right": rng.uniform(0.75, 0.78), "left": rng.uniform(0.77, 0.8)}
    dome_peak = {}
    below = cv.zeros()
    lungs: dict[str, np.ndarray] = {}
    for side in SIDES:
        cx = lung_cx[side]
        height = rng.uniform(0.1, 0.13)
        dome_peak[side] = angle_y[side] - height
        half = (x < 0.5) if side == "right" else (x >= 0.5)
        dome = angle_y[side] - height * np.clip(1.0 - ((x - cx) / 0.19) ** 2, 0.0, 1.0)
        under = half * _soft_inside(dome - y, edge)
        below = np.maximum(below, under)
        bottom = angle_y[side] + 0.03  # the lung's base reaches into the angle
        cy, ay = (lung_top + bottom) / 2, (bottom - lung_top) / 2
        lungs[side] = cv.ellipse(cx, cy, lung_ax, ay, power=2.8) * (1.0 - under)

    # Mediastinum with the spine, and the air column of the trachea.
    half_width = 0.05 + 0.035 * np.clip((y - 0.2) / 0.35, 0.0, 1.0)
    mediastinum = _soft_inside(np.abs(x - 0.5) - half_width, 2 * edge)
    trachea = _soft_inside(np.abs(x - 0.5) - 0.016, edge) * _soft_inside(y - 0.3, 2 * edge)

    # Heart: an ellipse to the patient's left resting on the left dome;
    # cardiomegaly widens it well past half the thoracic width.
    if case.cardiomegaly is None:
        heart_ax = rng.uniform(0.15, 0.17)
    else:
        heart_ax = {"mild": 0.225, "moderate": 0.25, "marked": 0.275}[case.cardiomegaly]
        heart_ax += rng.uniform(-0.008, 0.008)
    heart_ay = rng.uniform(0.14, 0.155)
    heart_cy = dome_peak["left"] - 0.06
    heart = cv.ellipse(0.53, heart_cy, heart_ax, heart_ay, edge=2 * edge) * (1.0 - below)

    # Vascular markings radiate from each hilum and fade to the periphery.
    markings = cv.zeros()
    for side in SIDES:
        cx = lung_cx[side]
        win = cv.window(cx - lung_ax, lung_top, cx + lung_ax, angle_y[side] + 0.03)
        hx = 0.5 + (-0.09 if side == "right" else 0.09)
        dx, dy = x[win] - hx, y[win] - 0.47
        theta, radius = np.arctan2(dy, dx), np.sqrt(dx * dx + dy * dy)
        wobble = 0.35 * np.sin(40.0 * radius + rng.uniform(0, 6.3))
        lines = 0.5 + 0.5 * np.cos(rng.integers(14, 20) * theta + wobble)
        lines = (lines * lines) ** 3
        markings[win] += lines * np.exp(-radius / 0.25)
    markings *= 1.0 + 0.3 * _smooth_noise(rng, markings.shape, 10)

    lung_field = np.maximum(lungs["right"], lungs["left"])

    # Pleural effusion: dependent fluid hiding the dome and the costophrenic
    # angle, its surface a meniscus climbing the lateral chest wall.
    fluid = cv.zeros()
    if case.effusion is not None:
        where, severity = case.effusion
        rise = {"small": 0.02, "moderate": 0.07, "large": 0.16}[severity] + rng.uniform(-0.01, 0.01)
        for side in SIDES if where == "bilateral" else (where,):
            lateral = lung_cx[side] + (-lung_ax if side == "right" else lung_ax)
            reach = np.clip(1.0 - np.abs(x - lateral) / (2 * lung_ax), 0.0, 1.0)
            level = dome_peak[side] - rise - 0.08 * reach**2
            fluid = np.maximum(fluid, lungs[side] * _soft_inside(level - y, 1.5 * edge))

    # Pneumothorax: the lung collapses towards the hilum and the base, leaving
    # a lucent apical and lateral rim without markings, edged by a thin
    # visceral pleural line.
    ptx_air = cv.zeros()
    pleural_line = cv.zeros()
    if case.pneumothorax is not None:
        side, severity = case.pneumothorax
        shrink = {"small": 0.8, "moderate": 0.67, "large": 0.52}[severity] + rng.uniform(
            -0.03, 0.03
        )
        cx = lung_cx[side]
        medial = cx + (lung_ax if side == "right" else -lung_ax)
        bottom = angle_y[side] + 0.03
        cy, ay = (lung_top + bottom) / 2, (bottom - lung_top) / 2
        ccx = medial + (cx - medial) * shrink
        ccy = bottom - (bottom - cy) * shrink
        collapsed = _superellipse(x, y, ccx, ccy, lung_ax * shrink, ay * shrink, 2.4)
        ptx_air = lungs[side] * (1.0 - _soft_inside(collapsed, edge))
        pleural_line = lungs[side] * np.exp(-((collapsed / (0.9 * px)) ** 2))
        markings *= 1.0 - ptx_air

    # Consolidation: a patchy airspace density confined to one lobe.
    consolidation = cv.zeros()
    if case.consolidation is not None:
        side, lobe = case.consolidation
        outward = -1.0 if side == "right" else 1.0
        cx = lung_cx[side] + outward * rng.uniform(-0.01, 0.03)
        cy = {
            "upper": lung_top + 0.13,
            "middle": 0.5 * (lung_top + dome_peak[side]) + 0.06,
            "lower": dome_peak[side] - 0.1,
        }[lobe] + rng.uniform(-0.02, 0.02)
        radius = rng.uniform(0.09, 0.11)
        win = cv.window(cx - 3 * radius, cy - 3 * radius, cx + 3 * radius, cy + 3 * radius)
        blob = np.exp(-(((x[win] - cx) ** 2 + ((y[win] - cy) / 0.85) ** 2) / (2 * radius**2)))
        patchy = 0.75 + 0.25 * _smooth_noise(rng, blob.shape, 5)
        # A dense core with a fairly sharp edge: airspace filled, not a faint haze.
        consolidation[win] = np.clip(2.4 * blob * patchy - 0.6, 0.0, 1.0)
        consolidation *= lungs[side]

    # Lung lesion: a round, sharply marginated nodule or a lobulated mass.
    lesion = cv.zeros()
    if case.lesion is not None:
        kind, side, zone, size_cm = case.lesion
        radius = 0.012 * size_cm + 0.014  # ~0.038 for a 2 cm nodule, ~0.074 for a 5 cm mass
        cy = {"upper": 0.3, "mid": 0.45, "lower": 0.57}[zone] + rng.uniform(-0.03, 0.03)
        offset = rng.uniform(-0.06, 0.03)  # mostly lateral, clear of the heart
        cx = lung_cx[side] + (offset if side == "right" else -offset)
        win = cv.window(cx - 1.3 * radius, cy - 1.3 * radius, cx + 1.3 * radius, cy + 1.3 * radius)
        lx, ly = x[win] - cx, y[win] - cy
        bumps = (
            0.12 * np.sin(5 * np.arctan2(ly, lx) + rng.uniform(0, 6.3)) if kind == "mass" else 0.0
        )
        lesion[win] = _soft_inside(np.sqrt(lx * lx + ly * ly) - radius * (1.0 + bumps), edge)

    # Ribs: posterior arcs sloping down laterally; clavicles at the apices.
    lateral = np.abs(x - 0.5)
    phase = (y - 0.1 - 0.9 * (lateral - 0.05) ** 2) / 0.072 + rng.uniform(-0.15, 0.15)
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * phase)
    ribs = ribs * ribs
    ribs = ribs * ribs
    ribs = ribs * ribs * ((phase > -0.5) & (phase < 8.5))
    ribs *= np.clip((lateral - 0.04) / 0.03, 0.0, 1.0) * _soft_inside(lateral - 0.44, 2 * edge)
    clavicles = cv.zeros()
    lift = rng.uniform(-0.01, 0.01)
    for sign in (-1.0, 1.0):
        pts = np.array([[0.5 + sign * 0.05, 0.19 + lift], [0.5 + sign * 0.3, 0.12 + lift]])
        clavicles = np.maximum(clavicles, cv.polyline(pts, 0.032))

    # Support devices: radiopaque tubes and lines.
    devices = cv.zeros()
    for device in case.devices:
        if device == "endotracheal tube":
            tip = rng.uniform(0.2, 0.27)
            devices = np.maximum(devices, cv.polyline(np.array([[0.5, -0.05], [0.5, tip]]), 0.014))
        elif device == "enteric tube":
            pts = np.concatenate(
                [
                    np.array([[0.51, -0.05], [0.515, 0.55]]),
                    _bezier((0.515, 0.55), (0.53, 0.82), (0.64 + rng.uniform(-0.03, 0.03), 0.84)),
                ]
            )
            devices = np.maximum(devices, cv.polyline(pts, 0.01))
        elif device == "central venous catheter":
            tip = 0.34 + rng.uniform(-0.03, 0.03)
            devices = np.maximum(
                devices, cv.polyline(_bezier((0.16, 0.12), (0.42, 0.13), (0.47, tip)), 0.01)
            )
        else:  # pacemaker: a generator in the left chest wall, its lead in the heart
            gx, gy = 0.76 + rng.uniform(-0.03, 0.03), 0.2
            devices = np.maximum(devices, cv.ellipse(gx, gy, 0.045, 0.032, power=4.0))
            lead = np.concatenate(
                [
                    _bezier((gx, gy), (0.55, 0.12), (0.49, 0.4)),
                    _bezier((0.49, 0.4), (0.46, 0.6), (0.55, 0.65)),
                ]
            )
            devices = np.maximum(devices, cv.polyline(lead, 0.01))

    # Gastric air bubble under the left dome.
    bubble = cv.ellipse(0.63, angle_y["left"] + 0.02, 0.05, 0.028, edge=2 * edge) * (1.0 - fluid)

    # Compose a density map: soft tissue, minus air, plus bone, fluid and metal.
    air = lung_field * (1.0 - heart) * (1.0 - mediastinum) * (1.0 - fluid)
    density = 0.46 * body
    density += (0.17 * mediastinum - 0.12 * trachea + 0.06 * below) * body
    density += 0.14 * heart * (1.0 - mediastinum)
    density -= 0.34 * air
    density += 0.14 * markings * air
    density -= 0.1 * ptx_air * (1.0 - heart)
    density += 0.3 * pleural_line * (1.0 - ptx_air) * (1.0 - heart) * (1.0 - fluid)
    # Airspace density shows through the heart too, more faintly.
    density += 0.4 * consolidation * (1.0 - fluid) * (1.0 - 0.5 * heart) * (1.0 - mediastinum)
    density += 0.36 * lesion
    density += (0.07 * ribs + 0.14 * clavicles - 0.2 * bubble) * body
    density += 0.55 * devices

    # Exposure and detector: contrast, brightness, gamma, noise.
    image = np.clip(density * rng.uniform(0.9, 1.15) + 0.06 + rng.uniform(-0.05, 0.06), 0.0, 1.0)
    image = image ** rng.uniform(0.8, 1.25)
    image += rng.normal(0.0, rng.uniform(0.01, 0.03), image.shape).astype(np.float32)
    image += 0.03 * _smooth_noise(rng, image.shape, 4)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- reports


def _side_phrase(rng: np.random.Generator, side: str) -> str:
    return side if rng.random() < 0.6 else f"{side}-sided"


def _heart_sentence(case: PhantomCase, rng: np.random.Generator) -> str:
    if case.cardiomegaly is None:
        return _pick(
            rng,
            (
                "The heart size is normal.",
                "Heart size is within normal limits.",
                "The cardiac silhouette is normal in size.",
                "The heart is normal in size.",
            ),
        )
    grade = case.cardiomegaly
    adverb = {"mild": "mildly", "moderate": "moderately", "marked": "markedly"}[grade]
    return _pick(
        rng,
        (
            f"There is {grade} cardiomegaly.",
            f"The heart is {adverb} enlarged.",
            f"The cardiac silhouette is {adverb} enlarged.",
            f"{grade.capitalize()} cardiomegaly is present.",
        ),
    )


def _pleura_sentences(case: PhantomCase, rng: np.random.Generator) -> list[str]:
    if case.effusion is None and case.pneumothorax is None:
        if rng.random() < 0.5:
            return [
                _pick(
                    rng,
                    (
                        "No pleural effusion or pneumothorax.",
                        "There is no pleural effusion or pneumothorax.",
                    ),
                )
            ]
    sentences = []
    if case.effusion is None:
        sentences.append(
            _pick(
                rng,
                (
                    "No pleural effusion.",
                    "There is no pleural effusion.",
                    "No pleural effusion is seen.",
                ),
            )
        )
    else:
        where, severity = case.effusion
        if where == "bilateral":
            sentences.append(
                _pick(
                    rng,
                    (
                        f"There are {severity} bilateral pleural effusions.",
                        f"{severity.capitalize()} bilateral pleural effusions with blunting of both costophrenic angles.",
                        f"Bilateral {severity} pleural effusions are present.",
                    ),
                )
            )
        else:
            side = _side_phrase(rng, where)
            sentences.append(
                _pick(
                    rng,
                    (
                        f"There is a {severity} {side} pleural effusion.",
                        f"{severity.capitalize()} {side} pleural effusion with blunting of the costophrenic angle.",
                        f"{severity.capitalize()} {side} pleural effusion is present with a meniscus.",
                    ),
                )
            )
    if case.pneumothorax is None:
        sentences.append(_pick(rng, ("No pneumothorax.", "There is no pneumothorax.")))
    else:
        where, severity = case.pneumothorax
        side = _side_phrase(rng, where)
        sentences.append(
            _pick(
                rng,
                (
                    f"There is a {severity} {side} pneumothorax.",
                    f"{severity.capitalize()} {side} pneumothorax with a visible pleural line.",
                    f"{severity.capitalize()} {side} apical and lateral pneumothorax is present.",
                ),
            )
        )
    return sentences


def _lung_sentences(case: PhantomCase, rng: np.random.Generator) -> list[str]:
    sentences = []
    if case.consolidation is None:
        sentences.append(
            _pick(
                rng,
                (
                    "No focal consolidation.",
                    "There is no focal consolidation.",
                    "The lungs are without focal consolidation.",
                ),
            )
        )
    else:
        side, lobe = case.consolidation
        sentences.append(
            _pick(
                rng,
                (
                    f"There is consolidation in the {side} {lobe} lobe.",
                    f"Focal consolidation is seen in the {side} {lobe} lobe.",
                    f"{side.capitalize()} {lobe} lobe consolidation.",
                ),
            )
        )
    if case.lesion is None:
        sentences.append(
            _pick(
                rng,
                (
                    "No pulmonary nodule or mass.",
                    "No suspicious pulmonary nodule or mass is identified.",
                    "There is no pulmonary nodule or mass.",
                ),
            )
        )
    else:
        kind, side, zone, size_cm = case.lesion
        sentences.append(
            _pick(
                rng,
                (
                    f"There is a {size_cm} cm {kind} in the {side} {zone} lung.",
                    f"{side.capitalize()} {zone} lung {kind} measuring {size_cm} cm.",
                    f"{size_cm} cm {side} {zone} lung {kind}.",
                ),
            )
        )
    return sentences


def _device_sentence(device: str, rng: np.random.Generator) -> str:
    # Each sentence opens with "There is" or "The ... is/has": without full
    # stops (blip_caption strips them) the labeler still sees a new sentence,
    # so a negation before it cannot reach the device.
    if device == "endotracheal tube":
        cm = int(rng.integers(3, 6))
        return _pick(
            rng,
            (
                f"There is an endotracheal tube with the tip {cm} cm above the carina.",
                f"The endotracheal tube tip is {cm} cm above the carina.",
            ),
        )
    if device == "enteric tube":
        return _pick(
            rng,
            (
                "There is an enteric tube coursing below the diaphragm into the stomach.",
                "The enteric tube tip is in the stomach.",
            ),
        )
    if device == "central venous catheter":
        return _pick(
            rng,
            (
                "There is a right subclavian central venous catheter ending in the superior vena cava.",
                "The central venous catheter tip is in the superior vena cava.",
            ),
        )
    return _pick(
        rng,
        (
            "There is a left chest wall pacemaker with its lead in the right ventricle.",
            "The left-sided pacemaker has a lead in the right ventricle.",
        ),
    )


def _impression(case: PhantomCase, rng: np.random.Generator) -> str:
    items = []
    if case.cardiomegaly is not None:
        items.append(f"{case.cardiomegaly.capitalize()} cardiomegaly.")
    if case.effusion is not None:
        where, severity = case.effusion
        items.append(
            f"{severity.capitalize()} bilateral pleural effusions."
            if where == "bilateral"
            else f"{severity.capitalize()} {where} pleural effusion."
        )
    if case.pneumothorax is not None:
        where, severity = case.pneumothorax
        items.append(f"{severity.capitalize()} {where} pneumothorax.")
    if case.consolidation is not None:
        side, lobe = case.consolidation
        items.append(f"{side.capitalize()} {lobe} lobe consolidation.")
    if case.lesion is not None:
        kind, side, zone, _ = case.lesion
        items.append(f"{side.capitalize()} {zone} lung {kind}.")
    if not items:
        return _pick(
            rng,
            (
                "No acute cardiopulmonary abnormality.",
                "No acute cardiopulmonary process.",
                "Normal chest radiograph.",
            ),
        )
    order = rng.permutation(len(items))
    return " ".join(items[i] for i in order)


def write_report(case: PhantomCase, rng: np.random.Generator) -> str:
    """A findings + impression report stating exactly the drawn findings.

    Wording and the order of the findings' sentence groups vary; each finding
    that is absent gets a normal statement (devices, like in real reports, are
    only mentioned when present).
    """
    groups = [
        [_heart_sentence(case, rng)],
        _pleura_sentences(case, rng),
        _lung_sentences(case, rng),
    ]
    if case.devices:
        groups.append([_device_sentence(device, rng) for device in case.devices])
    order = rng.permutation(len(groups))
    findings = " ".join(" ".join(groups[i]) for i in order)
    return f"Findings: {findings} Impression: {_impression(case, rng)}"


# --------------------------------------------------------------------------- tokenizer

TOKENIZER_DIR = "tokenizer"  # inside the output folder
TOKENIZER_VOCAB = 1024
_TEMPLATE_REPEATS = 50  # so that the template's pieces win merges over report words


def tokenizer_corpus(
    reports: Sequence[str],
    prompt_file: str | Path | None = None,
    conversations: Sequence[dict] = (),
) -> list[str]:
    """The tokenizer's training text: the reports as the model reads them, the prompts
    and the conversations' turns.

    Reports go through ``blip_caption`` with ``normalize: false`` (case and
    punctuation kept), as the phantom data set's processor reads them; each
    prompt is wrapped in the XrayGPT conversation template.
    """
    from xraygpt.conversation.templates import get_conv_template
    from xraygpt.data.tokenizer import template_lines
    from xraygpt.processors.blip_processors import BlipCaptionProcessor

    caption = BlipCaptionProcessor(max_words=10_000, normalize=False)
    texts = [caption(report) for report in reports]
    for entry in conversations:
        conv = get_conv_template("xraygpt")
        for turn in entry["conversations"]:
            conv.append_message(conv.roles[0 if turn["from"] == "human" else 1], turn["value"])
        texts.append(conv.get_prompt())
    return texts + template_lines(prompt_file) * _TEMPLATE_REPEATS


def train_tokenizer(
    texts: Sequence[str], out: str | Path, vocab_size: int = TOKENIZER_VOCAB
) -> Path:
    """The phantom reports' tokenizer, in LLaMA's layout, saved under ``out``.

    A vocabulary this small (phantom reports use ~200 words) keeps the tiny
    LLM's output layer, the bulk of its cost, cheap.
    """
    from xraygpt.data.tokenizer import train_llama_bpe

    return train_llama_bpe(texts, out, vocab_size, limit_alphabet=100)


# --------------------------------------------------------------------------- data set


def make_sample(
    seed: int, index: int, size: int = DEFAULT_SIZE
) -> tuple[np.ndarray, str, dict[str, int]]:
    """The image, report and labels of phantom ``index``: a pure function of its arguments."""
    rng = np.random.default_rng([seed, index])
    case = sample_case(rng)
    image = render_image(case, rng, size)
    report = write_report(case, rng)
    return image, report, case.labels()


def image_id(index: int) -> str:
    return f"phantom_{index:05d}"


def assign_splits(n: int, seed: int, fractions: Sequence[float] = DEFAULT_SPLITS) -> list[str]:
    """A seeded shuffle cut into train / val / test by ``fractions``."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(
            f"split fractions must be three non-negative numbers summing to 1, got {fractions}"
        )
    order = np.random.default_rng([seed, 2**31]).permutation(n)
    n_train = round(n * fractions[0])
    n_val = round(n * fractions[1])
    splits = [""] * n
    for rank, index in enumerate(order):
        splits[index] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return splits


def case_record(seed: int, index: int) -> dict:
    """What phantom ``index`` shows, as recorded in ``filter_cap.json`` (``case``).

    The fields of :class:`PhantomCase` (null / empty when absent); the
    conversations are written from it (``xraygpt.data.phantom.questions``).
    """
    return asdict(sample_case(np.random.default_rng([seed, index])))


def _write_sample(job: tuple[int, int, int, str]) -> tuple[str, str, dict[str, int], dict]:
    """Draw phantom ``index`` and write its PNG; returns (image id, report, labels, case)."""
    from PIL import Image

    seed, index, size, image_dir = job
    image, report, labels = make_sample(seed, index, size)
    name = image_id(index)
    # PNG level 1: ~3x faster to write than the default, a few % larger.
    Image.fromarray(image, mode="L").save(Path(image_dir) / f"{name}.png", compress_level=1)
    return name, report, labels, case_record(seed, index)


CONVERSATIONS_DIR = "conversations"  # inside the output folder: <split>.json
CONVERSATIONS_PER_CASE = {"train": 6, "val": 1, "test": 1}


def write_conversations(annotations: Sequence[dict], seed: int) -> dict[str, list[dict]]:
    """ShareGPT conversations per split from each case (``xraygpt.data.phantom.questions``).

    Train and val use the training phrasings; test uses the held-out ones,
    which training never sees. Each conversation is a pure function of
    ``(seed, index, k)``.
    """
    import random

    from xraygpt.data.phantom.questions import make_conversation, sharegpt_entry

    out: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    for index, ann in enumerate(annotations):
        split = ann["split"]
        phrasing = "held_out" if split == "test" else "train"
        for k in range(CONVERSATIONS_PER_CASE[split]):
            rng = random.Random(f"{seed}/{index}/{k}")
            report_first = k % 2 == 0
            pairs = make_conversation(
                ann["case"], ann["caption"], rng, phrasing=phrasing, report_first=report_first
            )
            out[split].append(
                sharegpt_entry(f"{ann['image_id']}_c{k}", ann["image_id"], pairs, report_first)
            )
    return out


def generate(
    out: str | Path,
    n: int = 3000,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    fractions: Sequence[float] = DEFAULT_SPLITS,
    progress: bool = True,
    prompt_file: str | Path | None = None,
    workers: int = 1,
) -> Path:
    """Write ``n`` phantoms under ``out`` in the OpenI layout; returns the annotation file.

    Each annotation also records its ``case`` (what is drawn: side, size, lobe,
    device). Also writes ``out/conversations/<split>.json`` (ShareGPT
    conversations about each case, see :func:`write_conversations`) and
    ``out/tokenizer/``, the tiny recipe's tokenizer trained on the training
    reports, conversations and the prompts of ``prompt_file`` (default: the
    shipped alignment prompts).
    """
    from tqdm import tqdm

    from xraygpt.common.config import REPO_ROOT
    from xraygpt.common.io import atomic_write_json

    if prompt_file is None:
        prompt_file = REPO_ROOT / DEFAULT_PROMPT_FILE
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if size < 32:
        raise ValueError(
            f"--size must be at least 32 pixels for the findings to be visible, got {size}"
        )
    out = Path(out)
    image_dir = out / "image"
    image_dir.mkdir(parents=True, exist_ok=True)
    splits = assign_splits(n, seed, fractions)
    jobs = [(seed, index, size, str(image_dir)) for index in range(n)]
    workers = max(1, min(workers, n))
    with contextlib.ExitStack() as stack:
        if workers > 1:
            # Each image depends on (seed, index) only, so the workers' order does not matter.
            pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(workers))
            results = pool.imap(_write_sample, jobs, chunksize=32)
        else:
            results = map(_write_sample, jobs)
        annotations = [
            {
                "image_id": name,
                "caption": report,
                "split": splits[i],
                "labels": labels,
                "case": case,
            }
            for i, (name, report, labels, case) in enumerate(
                tqdm(results, total=n, desc="phantoms", unit="img", disable=not progress)
            )
        ]
    # The tiny recipe's tokenizer, made here from the training reports (and the prompts).
    conversations = write_conversations(annotations, seed)
    (out / CONVERSATIONS_DIR).mkdir(exist_ok=True)
    for split, entries in conversations.items():
        atomic_write_json(entries, out / CONVERSATIONS_DIR / f"{split}.json")
    train_reports = [a["caption"] for a in annotations if a["split"] == "train"]
    train_tokenizer(
        tokenizer_corpus(train_reports, prompt_file, conversations["train"]), out / TOKENIZER_DIR
    )
    ann_path = out / "filter_cap.json"
    # Written last and atomically: its presence means the folder is complete.
    atomic_write_json(
        {
            "info": {
                "generator": "xraygpt.data.phantom.generator",
                "seed": seed,
                "n": n,
                "size": size,
            },
            "annotations": annotations,
        },
        ann_path,
    )
    return ann_path
