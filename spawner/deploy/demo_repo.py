"""Build the demo Butler repository in the data volume (runs INSIDE a stack container).

``stackhub up`` (``spawner.deploy.demo_data``) copies this file into a throwaway container of a
stack image with the data volume mounted read-write at ``/data`` and runs it with the stack's
Python. It uses the stack's own tools only: ``butler create``, ``butler register-instrument`` (a
small test instrument, ``DemoCam``, whose class is written next to the repository), ``butler
register-dataset-type``, and ``Butler.put`` of datasets made here (synthetic star fields made with
astropy). Standard library + the stack; nothing of stackhub is imported, so any stack tag runs it.

It does nothing when ``/data/.stackhub-demo.json`` says the repository is there (rebuilt only when
missing). It builds into ``/data/.building-<pid>`` and renames into place at the end, so a
failed or interrupted build leaves no half repository that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

DATA = Path(os.environ.get("STACKHUB_DEMO_DATA", "/data"))
MARKER = ".stackhub-demo.json"
FORMAT = 1
REPO = "butler"            # /data/butler
PYDIR = "python"           # /data/python: the instrument's module (stackhub_demo)
RUN = "demo/raw"           # the collection holding the demo datasets
INSTRUMENT = "DemoCam"
DETECTORS = 4
EXPOSURES = (2026112700001, 2026112700002, 2026112700003)
FILTERS = {"demo-g": "g", "demo-r": "r"}
SIZE = 200                 # pixels on a side of each image
OURS = ".made-by-stackhub"  # in each directory this program made (and only those it may replace)
MARKER_TEXT = "(`spawner/deploy/demo_repo.py`)"  # in the README this program writes

INSTRUMENT_MODULE = '''"""DemoCam: the test instrument of the stackhub demo repository (made by stackhub)."""

from lsst.daf.butler import Formatter
from lsst.pipe.base import Instrument


class DemoCam(Instrument):
    """A four-detector camera with two filters, for tutorials; it has no raw data format."""

    def __init__(self, *args, **kwargs):
        pass

    @staticmethod
    def getName():
        return "DemoCam"

    def getRawFormatter(self, dataId):
        return Formatter

    def register(self, registry, *, update=False):
        name = self.getName()
        with registry.transaction():
            registry.syncDimensionData("instrument", {
                "name": name, "detector_max": 4, "visit_max": 10**14, "exposure_max": 10**14,
                "class_name": "stackhub_demo.DemoCam"}, update=update)
            for physical, band in (("demo-g", "g"), ("demo-r", "r")):
                registry.syncDimensionData("physical_filter", {"instrument": name, "name": physical, "band": band},
                                           update=update)
            for d in range(4):
                registry.syncDimensionData("detector", {
                    "instrument": name, "id": d, "full_name": f"S{d:02d}", "name_in_raft": f"S{d:02d}",
                    "raft": "R00", "purpose": "SCIENCE"}, update=update)
'''

README = """# Tutorial data (read-only)

This volume is mounted read-only at `/data` in every stackhub server. The demo data below was made
by stackhub (`spawner/deploy/demo_repo.py`) with the stack's own tools, in a container of `{tag}`
(lsst-daf-butler {butler_version}), on {date}. Every stack tag of this deployment reads it.

## `/data/butler`: a small Butler repository

- instrument `DemoCam` (4 detectors, filters `demo-g` and `demo-r`), registered with
  `butler register-instrument`; its class is `stackhub_demo.DemoCam` in `/data/python`.
- collection `{run}` with, for each of {n_exposures} exposures x 4 detectors:
  - `demo_image` (NumpyArray): a {size}x{size} synthetic star field (Gaussian stars on a sky
    with noise, made with astropy.modeling);
  - `demo_header` (StructuredDataDict): FITS-style header cards, with a TAN WCS (astropy.wcs);
  - `demo_sources` (ArrowAstropy): the stars put into the image (x, y, ra, dec, flux).

```python
from lsst.daf.butler import Butler
butler = Butler("/data/butler", collections="{run}")
image = butler.get("demo_image", instrument="DemoCam", exposure={first}, detector=0)
```

The repository is read-only here. To write outputs (`pipetask run`), make a repository of your
own in your home and copy what you need into it (`butler create ~/repo`, then
`butler transfer-datasets /data/butler ~/repo --collections {run} --register-dataset-types
--transfer-dimensions`); the getting-started course shows how.

Rebuilt only when missing: delete `/data/.stackhub-demo.json` (as root, in the volume) and run
`make up` again to make it anew.
"""


def log(message: str):
    print(f"demo-data: {message}", flush=True)


def butler_cli(*args: str, env: dict):
    done = subprocess.run(["butler", *args], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"demo-data: butler {args[0]} failed: {(done.stderr or done.stdout).strip()[-800:]}")


def star_field(seed: int, n_stars: int = 25):
    """An image with Gaussian stars on a noisy sky, and the table of the stars (astropy)."""
    import numpy as np
    from astropy.modeling.models import Gaussian2D
    from astropy.table import Table

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    image = rng.normal(100.0, 5.0, (SIZE, SIZE))
    x = rng.uniform(10, SIZE - 10, n_stars)
    y = rng.uniform(10, SIZE - 10, n_stars)
    flux = rng.uniform(500, 20000, n_stars)
    sigma = 2.0
    for xi, yi, fi in zip(x, y, flux):
        amplitude = fi / (2 * np.pi * sigma**2)
        image += Gaussian2D(amplitude, xi, yi, sigma, sigma)(xx, yy)
    return image.astype(np.float32), Table({"x": x, "y": y, "flux": flux})


def header(exposure: int, detector: int, physical: str):
    from astropy.wcs import WCS

    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crpix = [SIZE / 2, SIZE / 2]
    wcs.wcs.crval = [150.0 + 0.02 * detector, 2.2 + 0.01 * (exposure % 10)]
    wcs.wcs.cdelt = [-0.2 / 3600, 0.2 / 3600]
    cards = {k: v for k, v in wcs.to_header().items()}
    cards.update({"INSTRUME": INSTRUMENT, "DETECTOR": detector, "FILTER": physical, "EXPID": exposure,
                  "EXPTIME": 30.0, "BUNIT": "adu"})
    return cards, wcs


def build(target: Path, tag: str):
    import lsst.daf.butler
    from lsst.daf.butler import Butler, Timespan
    import astropy.time

    pydir = target / PYDIR / "stackhub_demo"
    pydir.mkdir(parents=True)
    (pydir / "__init__.py").write_text(INSTRUMENT_MODULE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(target / PYDIR), os.environ.get("PYTHONPATH")]))}
    repo = target / REPO
    log("butler create")
    butler_cli("create", str(repo), env=env)
    log(f"butler register-instrument ({INSTRUMENT})")
    butler_cli("register-instrument", str(repo), "stackhub_demo.DemoCam", env=env)
    dims = ("instrument", "exposure", "detector")
    for name, storage in (("demo_image", "NumpyArray"), ("demo_header", "StructuredDataDict"),
                          ("demo_sources", "ArrowAstropy")):
        butler_cli("register-dataset-type", str(repo), name, storage, *dims, env=env)
    log("exposures and datasets")
    butler = Butler(str(repo), writeable=True, run=RUN)
    registry = butler.registry
    day_obs = 20261127
    t0 = astropy.time.Time("2026-11-27T03:00:00", scale="tai")
    registry.insertDimensionData("day_obs", {"instrument": INSTRUMENT, "id": day_obs,
                                             "timespan": Timespan(t0, t0 + astropy.time.TimeDelta(86400, format="sec"))})
    physicals = list(FILTERS)
    for i, exposure in enumerate(EXPOSURES):
        group = f"demo-{i}"
        registry.insertDimensionData("group", {"instrument": INSTRUMENT, "name": group})
        begin = t0 + astropy.time.TimeDelta(60 * i, format="sec")
        physical = physicals[i % len(physicals)]
        registry.insertDimensionData("exposure", {
            "instrument": INSTRUMENT, "id": exposure, "obs_id": f"DC_{exposure}", "physical_filter": physical,
            "day_obs": day_obs, "group": group, "exposure_time": 30.0, "dark_time": 30.0,
            "observation_type": "science", "observation_reason": "science", "seq_num": i + 1,
            "seq_start": i + 1, "seq_end": i + 1, "target_name": "demo-field", "science_program": "stackhub-demo",
            "tracking_ra": 150.0, "tracking_dec": 2.2, "sky_angle": 0.0, "azimuth": 0.0, "zenith_angle": 30.0,
            "has_simulated": True, "can_see_sky": True,
            "timespan": Timespan(begin, begin + astropy.time.TimeDelta(30, format="sec"))})
        for detector in range(DETECTORS):
            data_id = {"instrument": INSTRUMENT, "exposure": exposure, "detector": detector}
            image, stars = star_field(seed=exposure * 10 + detector)
            cards, wcs = header(exposure, detector, physical)
            sky = wcs.pixel_to_world(stars["x"], stars["y"])
            stars["ra"], stars["dec"] = sky.ra.deg, sky.dec.deg
            butler.put(image, "demo_image", data_id)
            butler.put(cards, "demo_header", data_id)
            butler.put(stars, "demo_sources", data_id)
    log(f"{len(EXPOSURES) * DETECTORS * 3} datasets in {RUN}")
    return lsst.daf.butler.__version__


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    tag = argv[0] if argv else os.environ.get("STACKHUB_STACK_TAG", "unknown")
    marker = DATA / MARKER
    if marker.is_file():
        log(f"already there ({marker}); nothing to do")
        return 0
    import datetime

    for name in (REPO, PYDIR):  # never over an operator's own data: only over what this program made
        if (DATA / name).exists() and not (DATA / name / OURS).exists():
            log(f"/data/{name} exists and was not made by stackhub; no demo data is made")
            return 0
    target = DATA / f".building-{os.getpid()}"
    for old in DATA.glob(".building-*"):  # an interrupted build's leftovers
        shutil.rmtree(old, ignore_errors=True)
    version = build(target, tag)
    for name in (REPO, PYDIR):
        (target / name / OURS).write_text("made by stackhub (spawner/deploy/demo_repo.py)\n")
    for dirpath, dirnames, filenames in os.walk(target):  # readable by every user, writable by none
        os.chmod(dirpath, 0o755)
        for n in filenames:
            os.chmod(os.path.join(dirpath, n), 0o644)
    for name in (REPO, PYDIR):  # an earlier, interrupted build of ours is replaced
        shutil.rmtree(DATA / name, ignore_errors=True)
        os.rename(target / name, DATA / name)
    shutil.rmtree(target, ignore_errors=True)
    readme = DATA / "README.md"
    if readme.exists() and MARKER_TEXT not in readme.read_text(errors="replace"):
        readme = DATA / "README-demo-data.md"  # the operator's README stays
    readme.write_text(README.format(tag=tag, butler_version=version, date=datetime.date.today(), run=RUN,
                                    n_exposures=len(EXPOSURES), size=SIZE, first=EXPOSURES[0]))
    os.chmod(readme, 0o644)
    os.chmod(DATA, 0o755)
    tmp = DATA / f".{MARKER}.tmp"
    tmp.write_text(json.dumps({"format": FORMAT, "tag": tag, "daf_butler": version, "repo": f"/data/{REPO}",
                               "collection": RUN, "instrument": INSTRUMENT}, indent=1) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, marker)
    log(f"made /data/{REPO} with lsst-daf-butler {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
