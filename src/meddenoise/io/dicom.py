"""DICOM in, DICOM derived series out.

Reading applies the modality LUT (RescaleSlope/Intercept, so CT is in HU), honours signed and
unsigned BitsStored and PixelPaddingValue, decodes every transfer syntax pydicom's pylibjpeg plugins
handle, keeps MONOCHROME1 as stored (never inverted), converts YBR to RGB and refuses PALETTE COLOR.

Writing produces a derived image a PACS accepts: the same IOD, patient and study; new SOP Instance
and Series Instance UIDs, derived from the source's UIDs and the derivation (method and every
parameter) so that a rerun with the same settings gives the same UIDs (`derived_uid`); ImageType
DERIVED\\SECONDARY, or DERIVED with the source's value 2 where the IOD allows only PRIMARY, and
what each IOD asks of a derived image (`_mark_derived`); DerivationDescription and
SourceImageSequence; pixel data uncompressed in explicit VR little endian, re-quantised into the
source's stored range (clipped values counted, never wrapped); a zero preamble.

Nothing here logs or reports patient identifiers: error messages name the file and the reason only.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import warnings
from collections.abc import Sequence as SequenceOf
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from meddenoise.io.base import (
    Image,
    ImageError,
    ImageMeta,
    WriteReport,
    as_stored_channels,
    atomic_output,
    check_pixel_limit,
    equal_channels_as_grey,
    mapping_from_array,
    quantise,
    refuse_overwriting_input,
)
from meddenoise.types import Layout

# Transfer syntaxes whose decoded pixels already differ from the original acquisition.
LOSSY_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.201",  # HTJ2K
    "1.2.840.10008.1.2.4.203",  # HTJ2K
}
SUPPORTED_PHOTOMETRIC = {
    "MONOCHROME1",
    "MONOCHROME2",
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_ICT",
    "YBR_RCT",
}
REQUIRED_PIXEL_ATTRIBUTES = (
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)
# Invalid once the pixels change, or only meaningful for the compressed source.
REMOVED_ON_WRITE = (
    "DigitalSignaturesSequence",
    "MACParametersSequence",
    "PixelDataProviderURL",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "IconImageSequence",
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "SmallestPixelValueInSeries",
    "LargestPixelValueInSeries",
)
SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")

# --- What a derived image must say, per IOD (PS3.3), checked by tests/test_dicom_corpus.py ---
# Image Type is DERIVED\SECONDARY except where an IOD enumerates value 2 (and its Frame Type's)
# as PRIMARY only (PS3.3 C.8.16.1 and the PET, NM, ophthalmic and microscopy modules): there the
# source's value 2 stays.
PRIMARY_ONLY_SOP_CLASSES = frozenset(
    {
        uid.EnhancedCTImageStorage,
        uid.LegacyConvertedEnhancedCTImageStorage,
        uid.EnhancedMRImageStorage,
        uid.EnhancedMRColorImageStorage,
        uid.LegacyConvertedEnhancedMRImageStorage,
        uid.PositronEmissionTomographyImageStorage,
        uid.EnhancedPETImageStorage,
        uid.LegacyConvertedEnhancedPETImageStorage,
        uid.NuclearMedicineImageStorage,
        uid.XRay3DAngiographicImageStorage,
        uid.XRay3DCraniofacialImageStorage,
        uid.BreastTomosynthesisImageStorage,
        uid.EnhancedUSVolumeStorage,
        uid.IntravascularOpticalCoherenceTomographyImageStorageForPresentation,
        uid.IntravascularOpticalCoherenceTomographyImageStorageForProcessing,
        uid.OphthalmicPhotography8BitImageStorage,
        uid.OphthalmicPhotography16BitImageStorage,
        uid.OphthalmicOpticalCoherenceTomographyEnFaceImageStorage,
        uid.VLWholeSlideMicroscopyImageStorage,
        uid.ParametricMapStorage,
        uid.MRSpectroscopyStorage,
    }
)
# The MR Pulse Sequence Module (PS3.3 C.8.13.4): required when Image Type value 1 is ORIGINAL or
# MIXED and not allowed otherwise, so a derived Enhanced MR image leaves it out.
MR_PULSE_SEQUENCE = (
    "PulseSequenceName",
    "MRAcquisitionType",
    "EchoPulseSequence",
    "MultipleSpinEcho",
    "MultiPlanarExcitation",
    "PhaseContrast",
    "VelocityEncodingAcquisitionSequence",
    "TimeOfFlightContrast",
    "ArterialSpinLabelingContrast",
    "SteadyStatePulseSequence",
    "EchoPlanarPulseSequence",
    "SaturationRecovery",
    "SpectrallySelectedSuppression",
    "OversamplingPhase",
    "GeometryOfKSpaceTraversal",
    "RectilinearPhaseEncodeReordering",
    "SegmentedKSpaceTraversal",
    "CoverageOfKSpace",
    "NumberOfKSpaceTrajectories",
)
# The Bulk Motion Synchronization Module's technique and signal source: the same condition.
BULK_MOTION = ("BulkMotionCompensationTechnique", "BulkMotionSignalSource")
ORIGINAL_ONLY_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    uid.EnhancedMRImageStorage: MR_PULSE_SEQUENCE + BULK_MOTION,
    uid.EnhancedMRColorImageStorage: MR_PULSE_SEQUENCE + BULK_MOTION,
    uid.LegacyConvertedEnhancedMRImageStorage: BULK_MOTION,
    # The Intravascular OCT Image Module's acquisition duration.
    uid.IntravascularOpticalCoherenceTomographyImageStorageForPresentation: (
        "AcquisitionDuration",
    ),
    uid.IntravascularOpticalCoherenceTomographyImageStorageForProcessing: ("AcquisitionDuration",),
}
# IODs whose Common Instance Reference Module must list every instance the object references
# (here the source named in SourceImageSequence).  Beside the two image IODs, objects that hold no
# image reach the writer only as malformed files with pixel data; their rule keeps even those valid.
COMMON_INSTANCE_REFERENCE_SOP_CLASSES = frozenset(
    {
        uid.IntravascularOpticalCoherenceTomographyImageStorageForPresentation,
        uid.IntravascularOpticalCoherenceTomographyImageStorageForProcessing,
        uid.VLWholeSlideMicroscopyImageStorage,
        uid.AdvancedBlendingPresentationStateStorage,
        uid.BasicStructuredDisplayStorage,
        uid.DeformableSpatialRegistrationStorage,
        uid.EncapsulatedSTLStorage,
        uid.RealWorldValueMappingStorage,
        uid.SpatialFiducialsStorage,
        uid.SpatialRegistrationStorage,
        uid.StereometricRelationshipStorage,
        uid.SurfaceSegmentationStorage,
        uid.TractographyResultsStorage,
    }
)
# Objects whose pixel data is not an acquired image: denoising them has no meaning, and their
# IOD has no way to say DERIVED.
NOT_IMAGES: dict[str, str] = {
    uid.OphthalmicOpticalCoherenceTomographyBscanVolumeAnalysisStorage: "an OCT B-scan volume "
    "analysis (results of an analysis, not an image to denoise)",
    uid.MicroscopyBulkSimpleAnnotationsStorage: "microscopy annotations, not an image",
    uid.SegmentationStorage: "a segmentation (labels, not an image to denoise)",
}


@dataclass
class DicomDetails:
    """The source datasets (pixel data removed) and the per-frame modality LUT."""

    datasets: list[Dataset]
    file_names: list[str]
    slopes: np.ndarray
    intercepts: np.ndarray
    stored_dtype: np.dtype[Any]
    frames_per_file: int = 1
    photometric_out: str = "MONOCHROME2"
    notes: list[str] = field(default_factory=list)


# How every DerivationDescription meddenoise writes begins: what tells its own output apart (a
# DICOM node or a PACS router never denoises it again).
DERIVATION_PREFIX = "Denoised by meddenoise"


def _open(path: Path) -> Dataset:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Large elements (pixel data) are read only when decoded, after the size check.
            return pydicom.dcmread(path, defer_size=1 << 20)
    except InvalidDicomError:
        raise ImageError(
            path, "not a DICOM file (no 'DICM' prefix / file meta information)"
        ) from None
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        NotImplementedError,
    ) as error:
        raise ImageError(path, f"cannot parse DICOM: {type(error).__name__}: {error}") from None


def _header_int(path: Path, dataset: Dataset, keyword: str) -> int:
    try:
        return int(dataset[keyword].value)
    except (ValueError, TypeError, OverflowError) as error:
        raise ImageError(path, f"invalid {keyword} in the header: {error}") from None


def _check_header(
    path: Path, dataset: Dataset, max_pixels: int | None
) -> tuple[int, int, int, int]:
    """Check the image pixel module and the pixel limit; return (frames, rows, columns, samples)."""
    not_image = NOT_IMAGES.get(str(dataset.get("SOPClassUID", "")))
    if not_image is not None:
        raise ImageError(path, f"is {not_image}")
    if "PixelData" not in dataset:
        if "FloatPixelData" in dataset or "DoubleFloatPixelData" in dataset:
            raise ImageError(path, "float pixel data (parametric maps) is not supported")
        sop_class = _sop_class(dataset)
        if holds_images(sop_class):
            raise ImageError(
                path,
                f"no pixel data, though a {UID(sop_class).name} holds an image: the file is "
                "damaged or cut short",
            )
        raise ImageError(path, "no pixel data (the file holds no image)")
    missing = [name for name in REQUIRED_PIXEL_ATTRIBUTES if name not in dataset]
    if missing:
        raise ImageError(path, f"no pixel data: the image pixel module lacks {', '.join(missing)}")
    if "TransferSyntaxUID" not in getattr(dataset, "file_meta", Dataset()):
        raise ImageError(path, "no transfer syntax in the file meta information")
    rows = _header_int(path, dataset, "Rows")
    columns = _header_int(path, dataset, "Columns")
    samples = _header_int(path, dataset, "SamplesPerPixel")
    frames = _header_int(path, dataset, "NumberOfFrames") if "NumberOfFrames" in dataset else 1
    bits_allocated = _header_int(path, dataset, "BitsAllocated")
    bits_stored = _header_int(path, dataset, "BitsStored")
    if rows < 1 or columns < 1 or frames < 1 or samples not in (1, 3):
        raise ImageError(path, f"invalid image size {frames} x {rows} x {columns} x {samples}")
    if bits_allocated not in (8, 16, 32) or not 1 <= bits_stored <= bits_allocated:
        raise ImageError(path, f"unsupported bit depth: {bits_stored} stored in {bits_allocated}")
    check_pixel_limit(path, frames * rows * columns * samples, max_pixels)
    photometric = str(dataset.PhotometricInterpretation).strip()
    if photometric == "PALETTE COLOR":
        raise ImageError(path, "PALETTE COLOR images are not supported (convert to RGB first)")
    if photometric not in SUPPORTED_PHOTOMETRIC:
        raise ImageError(path, f"unsupported PhotometricInterpretation {photometric!r}")
    return frames, rows, columns, samples


def _stored_dtype(dataset: Dataset) -> np.dtype[Any]:
    signed = int(dataset.get("PixelRepresentation", 0)) == 1
    bits = int(dataset.BitsAllocated)
    return np.dtype(f"{'i' if signed else 'u'}{bits // 8}")


def stored_limits(dataset: Dataset) -> tuple[int, int]:
    """The smallest and largest stored value BitsStored and PixelRepresentation allow."""
    bits = int(dataset.BitsStored)
    if int(dataset.get("PixelRepresentation", 0)) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _rescale_item(item: Dataset) -> tuple[float, float] | None:
    if "RescaleSlope" in item or "RescaleIntercept" in item:
        return float(item.get("RescaleSlope", 1.0) or 1.0), float(
            item.get("RescaleIntercept", 0.0) or 0.0
        )
    return None


def _frame_rescales(
    path: Path, dataset: Dataset, frames: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-frame slope and intercept (enhanced multi-frame keeps them in functional groups)."""
    slopes = np.ones(frames)
    intercepts = np.zeros(frames)
    if "ModalityLUTSequence" in dataset:
        # A lookup-table modality LUT is not invertible in general: work in stored values.
        return slopes, intercepts, "non-linear modality LUT ignored: denoised in stored values"
    try:
        shared = None
        if "SharedFunctionalGroupsSequence" in dataset:
            group = dataset.SharedFunctionalGroupsSequence[0]
            if "PixelValueTransformationSequence" in group:
                shared = _rescale_item(group.PixelValueTransformationSequence[0])
        per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
        for index in range(frames):
            rescale = _rescale_item(dataset)
            if shared is not None:
                rescale = shared
            if per_frame is not None and index < len(per_frame):
                group = per_frame[index]
                if "PixelValueTransformationSequence" in group:
                    rescale = _rescale_item(group.PixelValueTransformationSequence[0]) or rescale
            if rescale is not None:
                slopes[index], intercepts[index] = rescale
    except (ValueError, TypeError, IndexError) as error:
        raise ImageError(path, f"invalid rescale slope/intercept: {error}") from None
    if not (
        np.all(np.isfinite(slopes)) and np.all(slopes != 0) and np.all(np.isfinite(intercepts))
    ):
        raise ImageError(path, "invalid rescale slope/intercept (zero or not finite)")
    return slopes, intercepts, ""


def _decode(path: Path, dataset: Dataset) -> np.ndarray:
    transfer_syntax = UID(dataset.file_meta.TransferSyntaxUID)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = np.asarray(dataset.pixel_array)
        return (
            pixels.astype(pixels.dtype.newbyteorder("="))
            if pixels.dtype.byteorder == ">"
            else pixels
        )
    except NotImplementedError as error:
        raise ImageError(
            path, f"no decoder installed for transfer syntax {transfer_syntax.name}: {error}"
        ) from None
    except Exception as error:  # decoders raise many types; each is one clear line for the user
        reason = " ".join(line.strip() for line in str(error).splitlines()) or type(error).__name__
        raise ImageError(
            path, f"cannot decode pixel data ({transfer_syntax.name}): {reason}"
        ) from None


def _padding_mask(dataset: Dataset, stored: np.ndarray) -> np.ndarray | None:
    if "PixelPaddingValue" not in dataset or int(dataset.SamplesPerPixel) != 1:
        return None
    padding = int(dataset.PixelPaddingValue)
    limit = int(dataset.get("PixelPaddingRangeLimit", padding))
    low, high = min(padding, limit), max(padding, limit)
    mask = (stored >= low) & (stored <= high)
    return mask if mask.any() else None


def _decode_file(
    path: Path, dataset: Dataset, max_pixels: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str, int]:
    """Decode one file to (stored frames, slopes, intercepts, note, frame count)."""
    frames, rows, columns, samples = _check_header(path, dataset, max_pixels)
    stored = _decode(path, dataset)
    expected = (frames, rows, columns) + ((3,) if samples == 3 else ())
    if frames == 1:
        stored = stored.reshape(expected)
    if stored.shape != expected:
        raise ImageError(path, f"decoded pixels {stored.shape} disagree with the header {expected}")
    slopes, intercepts, note = _frame_rescales(path, dataset, frames)
    return stored, slopes, intercepts, note, frames


def _strip_pixels(dataset: Dataset) -> Dataset:
    """A copy of the header without pixel data (the decoded array replaces it).

    File meta elements (group 0002) found in the body of a damaged file are left out: the writer
    makes the file meta anew.
    """
    header = Dataset()
    for element in dataset:
        if element.tag != 0x7FE00010 and element.tag.group != 0x0002:
            header.add(copy.deepcopy(element))
    header.file_meta = copy.deepcopy(dataset.file_meta)
    header.preamble = None
    return header


def _modality_array(stored: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray) -> np.ndarray:
    if np.all(slopes == 1.0) and np.all(intercepts == 0.0):
        return stored
    # float32 holds every 16-bit stored value times any slope exactly enough to invert by rounding.
    dtype = np.float32 if stored.dtype.itemsize <= 2 else np.float64
    shape = (-1,) + (1,) * (stored.ndim - 1)
    return (stored * slopes.reshape(shape) + intercepts.reshape(shape)).astype(dtype)


def _build_image(
    path: Path,
    datasets: list[Dataset],
    file_names: list[str],
    stored: np.ndarray,
    slopes: np.ndarray,
    intercepts: np.ndarray,
    frames_per_file: int,
    notes: list[str],
    *,
    series: bool,
) -> Image:
    first = datasets[0]
    colour = stored.ndim == 4
    mask = None if colour else _padding_mask(first, stored)
    array = _modality_array(stored, slopes, intercepts)
    low, high = stored_limits(first)
    layout: Layout
    grey_as_rgb = False
    if colour:
        layout = "colour" if stored.shape[0] == 1 else "colour_frames"
        array = array[0] if stored.shape[0] == 1 else array
        array, layout, grey_as_rgb = equal_channels_as_grey(array, layout)
    else:
        layout = "grey" if stored.shape[0] == 1 and not series else "volume"
        if layout == "grey":
            array = array[0]
            mask = mask[0] if mask is not None else None
    mapping = mapping_from_array(path, array, mask=None if mask is None else ~mask)
    details = DicomDetails(
        datasets=[_strip_pixels(dataset) for dataset in datasets],
        file_names=file_names,
        slopes=slopes,
        intercepts=intercepts,
        stored_dtype=_stored_dtype(first),
        frames_per_file=frames_per_file,
        photometric_out="RGB" if colour else str(first.PhotometricInterpretation).strip(),
        notes=[note for note in notes if note],
    )
    return Image(
        array=array,
        meta=ImageMeta(
            format="dicom",
            layout=layout,
            mapping=mapping,
            source=path,
            stored_range=(float(low), float(high)),
            details=details,
            keep_mask=mask,
            grey_as_rgb=grey_as_rgb,
        ),
    )


def read_dicom(path: Path, *, max_pixels: int | None) -> Image:
    """Read one DICOM file (single- or multi-frame) in modality units."""
    dataset = _open(path)
    stored, slopes, intercepts, note, frames = _decode_file(path, dataset, max_pixels)
    return _build_image(
        path, [dataset], [path.name], stored, slopes, intercepts, frames, [note], series=False
    )


def _slice_position(dataset: Dataset) -> float | None:
    """Position along the slice normal (from ImageOrientationPatient), or None if unknown."""
    try:
        orientation = np.asarray(dataset.ImageOrientationPatient, dtype=float)
        position = np.asarray(dataset.ImagePositionPatient, dtype=float)
    except (AttributeError, ValueError, TypeError):
        return None
    if orientation.shape != (6,) or position.shape != (3,):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return float(np.dot(normal, position))


def read_dicom_series(paths: list[Path], *, folder: Path, max_pixels: int | None) -> Image:
    """Read single-frame DICOM files of one series as a (D, H, W) volume.

    Slices are sorted by position along the slice normal (ImagePositionPatient), then by
    InstanceNumber; all must share the size and photometric interpretation.
    """
    opened = []
    total = 0
    for path in paths:
        dataset = _open(path)
        frames, rows, columns, samples = _check_header(path, dataset, max_pixels)
        if frames != 1 or samples != 1:
            raise ImageError(path, "a series folder must hold single-frame grey slices")
        total += rows * columns
        check_pixel_limit(folder, total, max_pixels)
        opened.append((path, dataset))

    def order(item: tuple[Path, Dataset]) -> tuple[float, int, str]:
        position = _slice_position(item[1])
        instance = int(item[1].get("InstanceNumber", 0) or 0)
        return (position if position is not None else 0.0, instance, item[0].name)

    opened.sort(key=order)
    first = opened[0][1]
    size = (int(first.Rows), int(first.Columns))
    slices, slopes, intercepts, notes = [], [], [], []
    for path, dataset in opened:
        if (int(dataset.Rows), int(dataset.Columns)) != size:
            raise ImageError(path, f"slice size differs from the series' {size[0]} x {size[1]}")
        stored, slope, intercept, note, _ = _decode_file(path, dataset, max_pixels)
        slices.append(stored[0])
        slopes.append(slope[0])
        intercepts.append(intercept[0])
        notes.append(note)
    return _build_image(
        folder,
        [dataset for _, dataset in opened],
        [path.name for path, _ in opened],
        np.stack(slices),
        np.asarray(slopes),
        np.asarray(intercepts),
        1,
        notes,
        series=True,
    )


def series_files(folder: Path) -> list[Path]:
    """The DICOM files of the one series a folder holds, sorted by name.

    Parameters
    ----------
    folder
        A folder of single-frame slices; files that are not DICOM images are ignored.

    Returns
    -------
    list of Path
        Every file whose header has a SeriesInstanceUID.

    Raises
    ------
    ImageError
        When the folder holds no DICOM file, or files of more than one series.
    """
    files = sorted(entry for entry in folder.iterdir() if entry.is_file())
    keyed = [(entry, series_key(entry)) for entry in files]
    dicom_files = [(entry, key) for entry, key in keyed if key is not None]
    if not dicom_files:
        raise ImageError(folder, "folder holds no DICOM files")
    series = {key for _, key in dicom_files}
    if len(series) > 1:
        raise ImageError(
            folder, f"folder holds {len(series)} DICOM series; give one series a folder"
        )
    return [entry for entry, _ in dicom_files]


def read_dicom_folder(
    folder: Path, *, max_pixels: int | None, files: list[Path] | None = None
) -> Image:
    """Read a folder holding the single-frame slices of one series as a (D, H, W) volume.

    Parameters
    ----------
    folder
        The series folder (`series_files` picks its DICOM files).
    max_pixels
        Refuse a series with more voxels than this; None lifts the limit.
    files
        The slices of one series when the folder holds several; None takes `series_files`.

    Returns
    -------
    Image
        Layout "volume", slices in position order, in modality units.
    """
    chosen = series_files(folder) if files is None else files
    return read_dicom_series(chosen, folder=folder, max_pixels=max_pixels)


def pixel_spacing(image: Image) -> Any:
    """Row and column spacing in mm as the first dataset records it, or None.

    PixelSpacing, else ImagerPixelSpacing (projection radiographs), else an enhanced object's
    shared or first per-frame pixel measures.

    Parameters
    ----------
    image
        A DICOM image.

    Returns
    -------
    sequence or None
        The recorded values, unchecked: `meddenoise.io.pixel_spacing_mm` validates them.
    """
    dataset = image.meta.details.datasets[0]
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing")
    for groups_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        if spacing is not None:
            break
        try:  # enhanced objects: shared, else the first frame's pixel measures
            groups = getattr(dataset, groups_name)[0]
            spacing = groups.PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError):
            spacing = None
    return spacing


@dataclass(frozen=True)
class SeriesHeader:
    """What a batch needs from a DICOM file's header to group files into series.

    Attributes
    ----------
    uid
        SeriesInstanceUID, empty when missing.
    number, description
        SeriesNumber and SeriesDescription as text, empty when missing: they name the output
        folder of a series that shares its folder with other series.
    image
        Whether the file holds pixel data or should (its SOP class is an image's, `holds_images`:
        a damaged image stays an image to report), unlike a DICOMDIR, a report or a plan.
    """

    uid: str
    number: str
    description: str
    image: bool


def _sop_class(dataset: Dataset) -> str:
    meta = getattr(dataset, "file_meta", None) or Dataset()
    return str(dataset.get("SOPClassUID", "") or meta.get("MediaStorageSOPClassUID", "") or "")


def holds_images(sop_class: str) -> bool:
    """Whether objects of `sop_class` hold an image (pixel data) by their definition.

    True for the image storage classes (CT, MR, CR, ultrasound, secondary capture, enhanced and
    ophthalmic images, volumes ...); False for directories, reports, plans, presentation states
    and unknown classes.  A file of an image class without pixel data is damaged, not "no image".

    Examples
    --------
    >>> holds_images("1.2.840.10008.5.1.4.1.1.2"), holds_images("1.2.840.10008.1.3.10")
    (True, False)
    """
    name = UID(sop_class).name if sop_class else ""
    return "Image Storage" in name or name.endswith("Volume Storage")


def series_header(path: Path) -> SeriesHeader | None:
    """The `SeriesHeader` of a DICOM file, or None when its header cannot be read.

    Only the few elements needed are parsed and pixel data is not loaded, so a batch can look at
    every file of an archive quickly.
    """
    tags = ["SOPClassUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "PixelData"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = pydicom.dcmread(path, specific_tags=tags, defer_size=64)
            return SeriesHeader(
                uid=str(header.get("SeriesInstanceUID", "") or ""),
                number=str(header.get("SeriesNumber", "") or ""),
                description=str(header.get("SeriesDescription", "") or "").strip(),
                image="PixelData" in header or holds_images(_sop_class(header)),
            )
    except Exception:  # any damage: the file is read (and refused) as an item of its own
        return None


def series_key(path: Path) -> str | None:
    """SeriesInstanceUID of a DICOM file with pixel data, or None if it is not one."""
    header = series_header(path)
    return (header.uid or None) if header is not None and header.image else None


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def meddenoise_release() -> str:
    """The installed meddenoise version, read without importing the package top from io/."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("meddenoise")
    except PackageNotFoundError:
        return "unknown"


def is_meddenoise_derived(
    image_type: SequenceOf[str] | str | None, description: str | None
) -> bool:
    """Whether an instance is one that meddenoise derived (never to be denoised again).

    Parameters
    ----------
    image_type
        ImageType (0008,0008): its values, or Orthanc's backslash-joined text.
    description
        DerivationDescription (0008,2111).

    Returns
    -------
    bool
        True when ImageType starts with DERIVED and the description with `DERIVATION_PREFIX`.

    Examples
    --------
    >>> is_meddenoise_derived(["DERIVED", "SECONDARY"], "Denoised by meddenoise 0.1.0: method x")
    True
    >>> is_meddenoise_derived("ORIGINAL\\\\PRIMARY", None)
    False
    """
    values = image_type.split("\\") if isinstance(image_type, str) else list(image_type or [])
    first = str(values[0]).strip().upper() if values else ""
    return first == "DERIVED" and str(description or "").strip().startswith(DERIVATION_PREFIX)


def describe_derivation(derivation: dict[str, Any]) -> str:
    """DerivationDescription text: the method and its parameters (ST, at most 1024 characters)."""
    release = meddenoise_release()
    method = derivation.get("method", "unknown")
    parameters = derivation.get("parameters", {})
    listed = ", ".join(f"{key}={value}" for key, value in parameters.items())
    text = f"{DERIVATION_PREFIX} {release}: method {method}" + (f" ({listed})" if listed else "")
    return text[:1024]


def _canonical(value: Any) -> Any:
    """A JSON-ready stand-in for a parameter value json cannot write (numpy, paths, sets)."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    # Anything else by its repr: an object whose repr holds its address gives a new UID on every
    # run, which is safe (a UID is never reused for other pixels), only not reproducible.
    return repr(value)


def derived_uid(material: dict[str, Any]) -> UID:
    """A UID named by `material`: the same material gives the same UID, any change another one.

    The material is written as JSON with sorted keys and no spaces; the first 128 bits of its
    SHA-256 become a UUID (version 8, RFC 9562 variant bits set), written as the ``2.25.``
    UID of that UUID's integer value (DICOM PS3.5 B.2).  At most 44 characters.

    Parameters
    ----------
    material
        Everything the UID must depend on: source UIDs, method, parameters, mapping.

    Returns
    -------
    pydicom.uid.UID
        ``"2.25."`` followed by up to 39 decimal digits.

    Examples
    --------
    >>> derived_uid({"a": 1}) == derived_uid({"a": 1}) != derived_uid({"a": 2})
    True
    """
    text = json.dumps(material, sort_keys=True, separators=(",", ":"), default=_canonical)
    value = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8: a custom, name-derived UUID
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # the RFC 9562 variant
    return UID(f"2.25.{value}")


def derived_series_uid(image: Image) -> UID:
    """The Series Instance UID a derived image is written with.

    It depends on the source's Study and Series Instance UIDs, the SOP Instance UIDs of every
    source dataset written together (a series folder gets one series; the same slice written
    alone gets another), the derivation (method and every parameter, a network's weights hash
    among them), the intensity mapping (a `--window` changes the pixels), the layout and the
    meddenoise version (a release that changes a method's output must not reuse a UID).

    Parameters
    ----------
    image
        A DICOM image, usually the result of `meddenoise.pipeline.transform_image`.

    Returns
    -------
    pydicom.uid.UID
        A ``2.25.`` UID (`derived_uid`).
    """
    details: DicomDetails = image.meta.details
    first = details.datasets[0]
    return derived_uid(
        {
            "kind": "series",
            "study": str(first.get("StudyInstanceUID", "")),
            "series": str(first.get("SeriesInstanceUID", "")),
            "instances": [str(dataset.get("SOPInstanceUID", "")) for dataset in details.datasets],
            "derivation": image.meta.derivation,
            "mapping": [image.meta.mapping.low, image.meta.mapping.high],
            "layout": image.meta.layout,
            "meddenoise": meddenoise_release(),
        }
    )


def derived_instance_uid(series_uid: str, source: Dataset, index: int) -> UID:
    """The SOP Instance UID of the `index`-th file of derived series `series_uid`.

    The derived series UID already holds every setting; the source's SOP Instance UID and the
    file's position keep instances apart, even two source files that share a UID.

    Parameters
    ----------
    series_uid
        From `derived_series_uid`.
    source
        The source dataset this file is derived from.
    index
        The file's position in the written series (0 for a single file).

    Returns
    -------
    pydicom.uid.UID
        A ``2.25.`` UID (`derived_uid`).
    """
    return derived_uid(
        {
            "kind": "instance",
            "series": series_uid,
            "source": str(source.get("SOPInstanceUID", "")),
            "index": index,
        }
    )


def _derived_type(values: Any, sop_class: str) -> list[str]:
    """Image Type or Frame Type of a derived image: DERIVED, then SECONDARY where the IOD allows
    it (else the source's value 2), then the source's other values."""
    existing = (
        [str(value) for value in values]
        if isinstance(values, (list, pydicom.multival.MultiValue))
        else ([str(values)] if values else [])
    )
    second = "SECONDARY"
    if sop_class in PRIMARY_ONLY_SOP_CLASSES:
        second = existing[1] if len(existing) > 1 and existing[1] else "PRIMARY"
    return ["DERIVED", second, *existing[2:]]


def _mark_derived(derived: Dataset, source: Dataset, reference: Dataset) -> None:
    """Image Type, Frame Type, and what the IOD allows or requires once they say DERIVED."""
    sop_class = str(source.get("SOPClassUID", ""))
    derived.ImageType = _derived_type(source.get("ImageType", []), sop_class)
    for group_keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in derived.get(group_keyword, []):
            # Each family keeps Frame Type in its own macro (CT Image Frame Type, US Image
            # Description, ...): every sequence of the group is looked in.
            for element in group:
                for item in element.value if element.VR == "SQ" else ():
                    if "FrameType" in item:
                        item.FrameType = _derived_type(item.FrameType, sop_class)
    for keyword in ORIGINAL_ONLY_ATTRIBUTES.get(sop_class, ()):
        if keyword in derived:
            delattr(derived, keyword)
    if sop_class in COMMON_INSTANCE_REFERENCE_SOP_CLASSES:
        _list_in_common_instance_reference(derived, source, reference)


def _list_in_common_instance_reference(
    derived: Dataset, source: Dataset, reference: Dataset
) -> None:
    """Add the source to the Referenced Series Sequence, keeping what the source listed."""
    instance = Dataset()
    instance.ReferencedSOPClassUID = reference.ReferencedSOPClassUID
    instance.ReferencedSOPInstanceUID = reference.ReferencedSOPInstanceUID
    series_uid = str(source.get("SeriesInstanceUID", ""))
    listed = derived.get("ReferencedSeriesSequence") or Sequence()
    for series in listed:
        if str(series.get("SeriesInstanceUID", "")) == series_uid:
            instances = series.get("ReferencedInstanceSequence") or Sequence()
            instances.append(instance)
            series.ReferencedInstanceSequence = instances
            break
    else:
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        series.ReferencedInstanceSequence = Sequence([instance])
        listed.append(series)
    derived.ReferencedSeriesSequence = listed


def _derived_dataset(
    source: Dataset, pixels: np.ndarray, uids: tuple[UID, UID], description: str
) -> Dataset:
    series_uid, instance_uid = uids
    derived = copy.deepcopy(source)
    for keyword in REMOVED_ON_WRITE:
        if keyword in derived:
            delattr(derived, keyword)
    now = datetime.datetime.now()
    source_is_lossy = (
        str(source.file_meta.TransferSyntaxUID) in LOSSY_TRANSFER_SYNTAXES
        or str(source.get("LossyImageCompression", "00")) == "01"
    )
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    reference.PurposeOfReferenceCodeSequence = Sequence([_code_item(*SOURCE_PURPOSE)])

    derived.SOPInstanceUID = instance_uid
    derived.SeriesInstanceUID = series_uid
    _mark_derived(derived, source, reference)
    derived.DerivationDescription = description
    derived.SourceImageSequence = Sequence([reference])
    series_description = str(source.get("SeriesDescription", "")).strip()
    suffix = " denoised"
    derived.SeriesDescription = (series_description[: 64 - len(suffix)] + suffix).strip()
    derived.InstanceCreationDate = now.strftime("%Y%m%d")
    derived.InstanceCreationTime = now.strftime("%H%M%S")
    if source_is_lossy:
        derived.LossyImageCompression = "01"

    colour = pixels.ndim >= 3 and pixels.shape[-1] == 3 and int(source.SamplesPerPixel) == 3
    if colour:
        derived.PhotometricInterpretation = "RGB"
        derived.PlanarConfiguration = 0
    derived.PixelData = np.ascontiguousarray(
        pixels.astype(pixels.dtype.newbyteorder("<"))
    ).tobytes()
    derived["PixelData"].VR = "OB" if int(source.BitsAllocated) == 8 else "OW"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = source.file_meta.get(
        "MediaStorageSOPClassUID", source.SOPClassUID
    )
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    derived.file_meta = meta
    derived.preamble = b"\x00" * 128
    return derived


def _require_identity(target: Path, source: Dataset) -> None:
    """A derived image repeats its source's SOP class and names the source: both must be known.

    The file meta's Media Storage UIDs stand in where a damaged body lost them.
    """
    meta = getattr(source, "file_meta", None) or Dataset()
    for keyword, stand_in in (
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        if not str(source.get(keyword, "") or ""):
            if not str(meta.get(stand_in, "") or ""):
                raise ImageError(
                    target, f"cannot write a derived DICOM: the source has no {keyword}"
                )
            setattr(source, keyword, meta.get(stand_in))


def write_dicom(image: Image, path: Path) -> WriteReport:
    """Write a derived DICOM: one file, or for a series a folder `path` with one file per slice.

    The derived header is built from the source's, parsed from the source's bytes: a value of a
    damaged header that pydicom cannot convert or encode is an `ImageError` naming the output,
    never another exception (`tests/test_fuzz_readers.py` writes back every image it reads).
    """
    try:
        return _write_dicom(image, path)
    except (ImageError, OSError):
        raise
    except Exception as error:
        # pydicom appends the stack of the failing element's write to some messages.
        reason = (str(error).splitlines() or [""])[0] or type(error).__name__
        raise ImageError(
            path, f"cannot write a derived DICOM from the source's header: {reason}"
        ) from None


def _write_dicom(image: Image, path: Path) -> WriteReport:
    details: DicomDetails = image.meta.details
    if len(details.datasets) > 1:
        if path.exists() and not path.is_dir():
            raise ImageError(path, "a DICOM series is written to a folder, not a file")
        if image.meta.source is not None:
            for name in details.file_names:
                refuse_overwriting_input(path / name, [image.meta.source / name])
    values = np.asarray(image.array)
    if image.meta.layout in ("grey", "colour"):
        values = values[np.newaxis]
    values = as_stored_channels(image, values)
    shape = (-1,) + (1,) * (values.ndim - 1)
    stored_values = (
        values.astype(np.float64) - details.intercepts.reshape(shape)
    ) / details.slopes.reshape(shape)
    low, high = stored_limits(details.datasets[0])
    stored, clipped_low, clipped_high = quantise(stored_values, details.stored_dtype, low, high)
    series_uid = derived_series_uid(image)
    description = describe_derivation(image.meta.derivation)
    written = []
    if len(details.datasets) == 1:
        targets = [path]
        chunks = [stored]
    else:
        targets = [path / name for name in details.file_names]
        chunks = [stored[index : index + 1] for index in range(len(details.datasets))]
    for index, (source, target, chunk) in enumerate(
        zip(details.datasets, targets, chunks, strict=True)
    ):
        pixels = chunk[0] if chunk.shape[0] == 1 else chunk
        uids = (series_uid, derived_instance_uid(series_uid, source, index))
        _require_identity(target, source)
        derived = _derived_dataset(source, pixels, uids, description)
        with atomic_output(target) as handle, warnings.catch_warnings():
            # pydicom warns about values the source already had (e.g. over-long strings).
            warnings.simplefilter("ignore", UserWarning)
            pydicom.dcmwrite(
                handle, derived, enforce_file_format=True, implicit_vr=False, little_endian=True
            )
        written.append(target)
    return WriteReport(tuple(written), clipped_low, clipped_high, values=stored.size)
