"""exiftool (an independent parser) lists nothing outside each format's allowlist."""

from __future__ import annotations

import pytest

from tests.scrub_corpus import NAMES, DirtyFile


def tags(group: str, names: str) -> set[str]:
    return {f"{group}:{name}" for name in names.split()}


# Whole groups that describe the file system entry or the kept ICC profile.
ALLOWED_GROUPS = ("System:", "ICC-header:", "ICC_Profile:", "ICC-view:", "ICC-meas:", "ICC-chrm:")
COMMON = (
    {"SourceFile", "ExifTool:ExifToolVersion"}
    | tags("File", "FileType FileTypeExtension MIMEType ExifByteOrder")
    | tags("Composite", "ImageSize Megapixels")
)
CAPTURE = {"IFD0:Orientation", "ExifIFD:DateTimeOriginal"}
HEIF = (
    tags(
        "QuickTime",
        "AverageFrameRate BitDepthChroma BitDepthLuma ChromaFormat ConstantFrameRate "
        "ConstraintIndicatorFlags GenProfileCompatibilityFlags GeneralLevelIDC GeneralProfileIDC "
        "GeneralProfileSpace GeneralTierFlag HEVCConfigurationVersion MinSpatialSegmentationIDC "
        "NumTemporalLayers ParallelismType TemporalIDNested CleanAperture ColorPrimaries "
        "ColorProfiles CompatibleBrands HandlerType ImagePixelDepth ImageSpatialExtent MajorBrand "
        "MatrixCoefficients MediaDataOffset MediaDataSize MinorVersion Rotation "
        "TransferCharacteristics",
    )
    | tags("File", "ImageHeight ImageWidth")
    | {"Meta:PrimaryItemReference"}
)
MOVIE = tags(
    "QuickTime",
    "CompatibleBrands CreateDate CurrentTime Duration MajorBrand MatrixStructure "
    "MediaDataOffset MediaDataSize MinorVersion ModifyDate MovieHeaderVersion NextTrackID "
    "PosterTime PreferredRate PreferredVolume PreviewDuration PreviewTime SelectionDuration "
    "SelectionTime TimeScale",
) | tags("Composite", "AvgBitrate Rotation")
TRACK = (
    "HandlerType ImageHeight ImageWidth MatrixStructure MediaCreateDate MediaDuration "
    "MediaHeaderVersion MediaLanguageCode MediaModifyDate MediaTimeScale TrackCreateDate "
    "TrackDuration TrackHeaderVersion TrackID TrackLayer TrackModifyDate TrackVolume "
)
VIDEO_TRACK = tags(
    "Track1",
    TRACK + "BitDepth CompressorID GraphicsMode OpColor SourceImageHeight SourceImageWidth "
    "VideoFrameRate XResolution YResolution",
)
AUDIO_TRACK = tags(
    "Track2", TRACK + "AudioBitsPerSample AudioChannels AudioFormat AudioSampleRate Balance"
)
ALLOWED = {
    "jpeg": COMMON | CAPTURE | tags(
        "File", "BitsPerSample ColorComponents EncodingProcess ImageHeight ImageWidth "
        "YCbCrSubSampling",
    ) | tags("JFIF", "JFIFVersion ResolutionUnit XResolution YResolution"),
    "png": COMMON | CAPTURE | tags(
        "PNG", "BitDepth ColorType Compression Filter ImageHeight ImageWidth Interlace ProfileName"
    ),
    "webp": COMMON | CAPTURE | tags(
        "RIFF", "ImageHeight ImageWidth WebP_Flags AnimationLoopCount BackgroundColor Duration"
    ),
    "gif": COMMON | tags(
        "GIF", "AnimationIterations BackgroundColor BitsPerPixel ColorResolutionDepth Duration "
        "FrameCount GIFVersion HasColorMap ImageHeight ImageWidth TransparentColor",
    ),
    "tiff": COMMON | {"ExifIFD:DateTimeOriginal"} | tags(
        "IFD0", "BitsPerSample Compression ImageHeight ImageWidth PhotometricInterpretation "
        "PlanarConfiguration ResolutionUnit RowsPerStrip SamplesPerPixel StripByteCounts "
        "StripOffsets XResolution YResolution",
    ),
    "heif": COMMON | {"ExifIFD:DateTimeOriginal"} | HEIF,
    "isobmff-video": COMMON | MOVIE | VIDEO_TRACK | AUDIO_TRACK,
}  # fmt: skip


def _outside_allowlist(fmt: str, tags: dict) -> list[str]:
    allowed = ALLOWED[fmt]
    return sorted(k for k in tags if k not in allowed and not k.startswith(ALLOWED_GROUPS))


@pytest.mark.parametrize("name", NAMES)
def test_exiftool_lists_only_allowed_tags(
    name: str, corpus: dict[str, DirtyFile], exif_out: dict
) -> None:
    extra = _outside_allowlist(corpus[name].format, exif_out[name])
    assert extra == [], f"{name}: exiftool still lists {extra}"


@pytest.mark.parametrize("name", NAMES)
def test_the_input_fails_the_allowlist(
    name: str, corpus: dict[str, DirtyFile], exif_in: dict
) -> None:
    """The allowlist check is not vacuous: the dirty input fails it."""
    assert _outside_allowlist(corpus[name].format, exif_in[name])


@pytest.mark.parametrize("name", NAMES)
def test_no_warnings_on_the_output(name: str, exif_out: dict) -> None:
    assert "ExifTool:Warning" not in exif_out[name], exif_out[name].get("ExifTool:Warning")
