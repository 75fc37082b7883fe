"""mmtwins version and the versions of the OpenMMLab stack it was built for."""

__version__ = '0.1.0'

#: Inclusive lower and exclusive upper bounds of each supported package.
SUPPORTED = {
    'mmengine': ('0.10.0', '0.11.0'),
    'mmcv': ('2.0.0', '2.2.0'),
    'mmdet': ('3.3.0', '3.4.0'),
    'mmseg': ('1.2.0', '1.3.0'),
}
