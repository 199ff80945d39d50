"""The fleet: the nodes and the models they serve (spec: fleet.yml), what one instance takes on each kind of
node (shapes), every instance placed on a node and its GPUs (place), and the placement file the playbooks
read (render)."""

from llmfleet.fleet.place import FleetPlacement, PlacedInstance, place_fleet
from llmfleet.fleet.render import render_placement
from llmfleet.fleet.spec import FleetSpec, load_spec

__all__ = ["FleetPlacement", "FleetSpec", "PlacedInstance", "load_spec", "place_fleet", "render_placement"]
