"""The whole-MLP graph, built, stored and read.

- ``blocks``: the Block protocol, one non-negative matrix per pair of connected partitions;
- ``export``: the graph options (:class:`ExportOptions`) and the export of a model's weights;
- ``heads``: attention heads as nodes (their blocks, activations, and :func:`head_scores`);
- ``parts``: the pieces a graph is built from, and building them from a node table and edge list;
- ``meta``, ``scores``, ``storage``: the graph directory (its ``meta.json``, its stored score
  columns, the Parquet files written block by block and read lazily);
- ``mlpgraph``: :class:`MLPGraph` and its entry points (:func:`export_graph`, :func:`read_graph`);
- ``streaming``: graphs read from safetensors shards without building the model;
- ``viewer``: networkx / GraphML / GEXF subgraphs for viewers.

Imports ``kernels``, ``models`` and ``base`` only.
"""
from .blocks import COMBINES, Block, DiagonalBlock, Partition, SparseBlock, WeightBlock
from .examples import toy_graph
from .heads import HeadBlock, head_scores
from .mlpgraph import (
    DEFAULT_EXPORT,
    EXPORT_FORMATS,
    GATES,
    MODES,
    WEIGHTINGS,
    ExportOptions,
    GraphFormatError,
    MLPGraph,
    export_graph,
    read_graph,
)
from .storage import (
    EDGE_COLUMNS,
    EDGES_FILE,
    FORMAT_VERSION,
    KINDS,
    LAZY_READ_BYTES,
    NODE_COLUMNS,
    NODES_FILE,
    ROW_GROUP_ROWS,
    GraphParts,
    ParquetBlock,
    add_scores,
    column_name,
    read_parts,
    score_column_name,
    stored_scores,
    write_graph,
)
from .streaming import SafetensorsBlock, SafetensorsHeadBlock, export_graph_from_safetensors, safetensors_index
from .viewer import (
    VIEW_EDGE_BUDGET,
    VIEW_EDGE_LIMIT,
    VIEW_EXTRA,
    VIEW_FORMATS,
    VIEW_TOP_NODES,
    select,
    to_networkx,
    write_viewer,
)

__all__ = ["toy_graph", "Partition", "Block", "WeightBlock", "DiagonalBlock", "SparseBlock", "COMBINES", "ParquetBlock",
           "GraphParts", "write_graph", "read_parts", "add_scores", "stored_scores", "score_column_name",
           "column_name", "ROW_GROUP_ROWS", "LAZY_READ_BYTES", "FORMAT_VERSION", "EDGES_FILE", "NODES_FILE", "KINDS",
           "NODE_COLUMNS", "EDGE_COLUMNS", "to_networkx", "select", "write_viewer", "VIEW_FORMATS", "VIEW_TOP_NODES",
           "VIEW_EDGE_BUDGET", "VIEW_EDGE_LIMIT", "VIEW_EXTRA", "MLPGraph", "ExportOptions", "DEFAULT_EXPORT",
           "export_graph", "read_graph", "GraphFormatError", "MODES", "GATES", "WEIGHTINGS", "EXPORT_FORMATS",
           "export_graph_from_safetensors", "SafetensorsBlock", "SafetensorsHeadBlock", "safetensors_index",
           "HeadBlock", "head_scores"]
