"""A small PipelineTask for the getting-started course: find the stars in a demo image.

``pipetask run`` imports it by name (``demo_tasks.FindStarsTask``), so the notebook puts this
folder on PYTHONPATH for the command.
"""

import numpy as np
from astropy.table import Table
from scipy import ndimage

import lsst.pex.config as pexConfig
import lsst.pipe.base as pipeBase
import lsst.pipe.base.connectionTypes as cT


class FindStarsConnections(pipeBase.PipelineTaskConnections, dimensions=("instrument", "exposure", "detector")):
    image = cT.Input(name="demo_image", storageClass="NumpyArray", dimensions=("instrument", "exposure", "detector"),
                     doc="the image to search")
    stars = cT.Output(name="demo_found_stars", storageClass="ArrowAstropy",
                      dimensions=("instrument", "exposure", "detector"), doc="the stars found: x, y, flux")


class FindStarsConfig(pipeBase.PipelineTaskConfig, pipelineConnections=FindStarsConnections):
    threshold = pexConfig.Field(dtype=float, default=5.0, doc="detection threshold, in sigma of the sky")


class FindStarsTask(pipeBase.PipelineTask):
    """Threshold the image above its sky and measure each connected group of pixels."""

    ConfigClass = FindStarsConfig
    _DefaultName = "findStars"

    def run(self, image):
        sky = np.median(image)
        sigma = 1.4826 * np.median(np.abs(image - sky))
        labels, n = ndimage.label(image > sky + self.config.threshold * sigma)
        index = np.arange(1, n + 1)
        ys, xs = np.array(ndimage.center_of_mass(image - sky, labels, index)).T if n else ([], [])
        flux = ndimage.sum(image - sky, labels, index) if n else []
        self.log.info("found %d stars (sky %.1f, sigma %.2f)", n, sky, sigma)
        return pipeBase.Struct(stars=Table({"x": np.asarray(xs), "y": np.asarray(ys), "flux": np.asarray(flux)}))
