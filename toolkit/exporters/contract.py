"""Moved to toolkit.models.contract (the contract is the models' own vocabulary; exporters read it).

This alias keeps branches written before the move importing; new code imports toolkit.models.contract.
"""

from toolkit.models.contract import BufferedState, ContractFactory, EntryPoint, StateSpec, TensorSpec, buffer_name

__all__ = ["BufferedState", "ContractFactory", "EntryPoint", "StateSpec", "TensorSpec", "buffer_name"]
