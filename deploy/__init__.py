"""Deployment of eventworks to a Knative cluster, and the checks that run without one.

`python -m deploy stage` builds each function's `kn func` build context (`stage`),
`python -m deploy apply` runs `kn func deploy` on each and `kubectl apply -k` on an
overlay, and `python -m deploy check` does everything but talk to a cluster: func.yaml
against func's schema (`project`), a fresh-virtualenv install and CloudEvent of every
staged folder (`smoke`), and the Kustomize overlays against the Kubernetes and Knative
schemas and against each other (`overlays`). docs/deploy.md is the user's guide.
"""
