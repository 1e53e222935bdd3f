"""One local Ray per test module (2 CPUs, temp dir under pytest's tmp), shut down only if the module started it."""

import pytest


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    import ray

    from tasb_ray.distributed.runtime import init_ray

    started = init_ray(num_cpus=2, temp_dir=tmp_path_factory.mktemp("ray"), object_store_memory=256 * 2**20)
    yield
    if started:
        ray.shutdown()
