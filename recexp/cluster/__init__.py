"""Validation of the cluster manifests (``cluster/``): KubeRay, the Ray cluster launcher, the image.

    python -m recexp.cluster cluster/

- ``entrypoints.py``  the ``python -m ray_jobs.<stage> --config ... key=value`` of a manifest
- ``resources.py``    node groups, what stages ask for (Ray Train workers, actor pools), placement
- ``serving.py``      Serve config files (Serve's schema, builder, args)
- ``manifests.py``    the Kubernetes kinds (RayCluster, RayJob, RayService, CronJob, ConfigMap)
- ``images.py``       cluster/Dockerfile and the cluster-launcher config
- ``validate.py``     all of it over a ``cluster/`` tree, and the command line
"""
