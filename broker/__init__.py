"""The local broker: what Knative's Kafka broker does, for one laptop.

`broker.ingress` accepts CloudEvents at `/<namespace>/<broker>` and stores them in
Kafka in binary content mode. The trigger dispatcher and the sources come later.
"""
