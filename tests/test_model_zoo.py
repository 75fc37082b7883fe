"""The model zoo agrees with itself: configs, metafiles and READMEs are in
one-to-one correspondence, the README tables are the ones generated from the
metafiles, and the baselines inherit the upstream configs they name."""
from __future__ import annotations

import os
import re

import pytest
from _zoo_helpers import REPO, load, stem, table_configs, zoo_table

ZOO = zoo_table()
FOLDERS = ('detection', 'segmentation')

# The table-row config names the zoo promises, verbatim.
TABLE_ROW_NAMES = (
    [f'retinanet_twins_{f}_{s}_1x_coco' for f in ('pcpvt', 'svt')
     for s in 'sbl'] +
    [f'retinanet_twins_{f}_{s}_3x_ms_coco' for f in ('pcpvt', 'svt')
     for s in 'sb'] +
    [f'mask_rcnn_twins_{f}_{s}_1x_coco' for f in ('pcpvt', 'svt')
     for s in 'sbl'] +
    [f'mask_rcnn_twins_{f}_{s}_3x_ms_coco' for f in ('pcpvt', 'svt')
     for s in 'sb'] +
    [f'retinanet_sasa_r50_{v}_1x_coco' for v in (
        'convstem', 'attnstem', 'convstem_attnhead', 'attnstem_attnhead')] +
    [f'fpn_twins_{f}_{s}_80k_ade20k_512x512' for f in ('pcpvt', 'svt')
     for s in 'sbl'] +
    [f'upernet_twins_{f}_{s}_160k_ade20k_512x512' for f in ('pcpvt', 'svt')
     for s in 'sbl'])


def _models(folder):
    return ZOO.load_metafile(folder)['Models']


def test_table_row_config_names_exist():
    stems = {stem(p) for p in table_configs()}
    missing = sorted(set(TABLE_ROW_NAMES) - stems)
    assert not missing


@pytest.mark.parametrize('folder', FOLDERS)
def test_configs_and_metafile_match_one_to_one(folder):
    configs = {stem(p) for p in table_configs()
               if p.startswith(f'configs/{folder}/')}
    names = [m['Name'] for m in _models(folder)]
    assert configs, folder
    assert len(names) == len(set(names)), 'duplicate metafile names'
    assert set(names) == configs
    collections = {c['Name'] for c in
                   ZOO.load_metafile(folder)['Collections']}
    for model in _models(folder):
        assert model['Config'] == f'configs/{folder}/{model["Name"]}.py'
        assert model['In Collection'] in collections
        # Every row has the paper's numbers, or says plainly it has none.
        no_result = model['Metadata']['Paper Table'] == 'no paper result'
        assert bool(model['Results'][0]['Metrics']) != no_result, \
            model['Name']


@pytest.mark.parametrize('folder', FOLDERS)
def test_metafile_is_canonical_and_measured(folder):
    with open(ZOO.metafile_path(folder), encoding='utf-8') as f:
        text = f.read()
    assert ZOO.dump_metafile(ZOO.load_metafile(folder)) == text
    for model in _models(folder):
        meta = model['Metadata']
        assert meta['Params (M)'] is not None, model['Name']
        assert meta['FLOPs (G)'] is not None, model['Name']


@pytest.mark.parametrize('folder', FOLDERS)
def test_readme_tables_are_generated_from_metafile(folder):
    with open(ZOO.readme_path(folder), encoding='utf-8') as f:
        text = f.read()
    assert ZOO.render_readme(folder, text) == text, (
        'stale README table: run python tools/analysis/zoo_table.py')
    tables = ''.join(m.group('body') for m in ZOO.TABLE_RE.finditer(text))
    marked = [m.group('name') for m in ZOO.TABLE_RE.finditer(text)]
    assert sorted(marked) == sorted(
        c['Name'] for c in ZOO.load_metafile(folder)['Collections'])
    linked = re.findall(r'\]\(([^)]+)\.py\)', tables)
    assert sorted(linked) == sorted(m['Name'] for m in _models(folder))
    for target in re.findall(r'\]\(([^)#]+)\)', text):
        if '://' not in target:
            assert os.path.exists(os.path.join(REPO, 'configs', folder,
                                               target)), target


@pytest.mark.parametrize('folder', FOLDERS)
def test_baselines_inherit_their_upstream_config(folder):
    for model in _models(folder):
        upstream = model['Metadata'].get('Upstream Config')
        twins_or_sasa = '_twins_' in model['Name'] or '_sasa_' in model['Name']
        assert (upstream is None) == twins_or_sasa, model['Name']
        if upstream:
            with open(os.path.join(REPO, model['Config'])) as f:
                assert f"_base_ = '{upstream}'" in f.read(), model['Name']


def test_3x_rows_share_the_paper_counts_of_their_1x_rows():
    """Tables 3 and 4 print one Params/FLOPs pair per backbone for both
    schedules; a transcription slip would break the pairing."""
    models = {m['Name']: m['Metadata'] for m in _models('detection')}
    pairs = 0
    for name, meta in models.items():
        twin = models.get(name.replace('_3x_ms_', '_1x_'))
        if '_3x_ms_' in name and twin is not None:
            pairs += 1
            for key in ('Paper Params (M)', 'Paper FLOPs (G)',
                        'Params (M)', 'FLOPs (G)'):
                assert meta[key] == twin[key], (name, key)
    assert pairs == 14


def test_init_cfg_checkpoints_are_official_imagenet_weights():
    for path in table_configs():
        if '_twins_' not in path:
            continue
        ckpt = load(path).model.backbone.init_cfg.checkpoint
        assert ckpt.startswith(
            'https://github.com/rwightman/pytorch-image-models/releases/'
            'download/v0.1-vt3p-weights/twins_'), ckpt
