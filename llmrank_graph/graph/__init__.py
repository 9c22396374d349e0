"""The whole-MLP graph: the Block protocol (`blocks`), the graph directory (`storage`),
`MLPGraph` and export (`mlpgraph`), graphs streamed from safetensors (`streaming`) and
networkx / GraphML / GEXF interop (`viewer`). Imports `kernels`, `models`, `base`.
"""
from .blocks import (Partition, Block, WeightBlock, DiagonalBlock, SparseBlock, COMBINES)
from .storage import (ParquetBlock, GraphParts, write_graph, read_parts, add_scores, stored_scores, score_column_name, column_name, ROW_GROUP_ROWS, LAZY_READ_BYTES, FORMAT_VERSION, EDGES_FILE, NODES_FILE, KINDS, NODE_COLUMNS, EDGE_COLUMNS)
from .viewer import (to_networkx, select, write_viewer, VIEW_FORMATS, VIEW_TOP_NODES, VIEW_EDGE_BUDGET, VIEW_EDGE_LIMIT, VIEW_EXTRA)
from .mlpgraph import (MLPGraph, ExportOptions, DEFAULT_EXPORT, export_graph, read_graph, GraphFormatError, MODES, GATES, WEIGHTINGS, EXPORT_FORMATS)
from .streaming import (export_graph_from_safetensors, SafetensorsBlock, safetensors_index)

__all__ = ['Partition', 'Block', 'WeightBlock', 'DiagonalBlock', 'SparseBlock', 'COMBINES', 'ParquetBlock', 'GraphParts', 'write_graph', 'read_parts', 'add_scores', 'stored_scores', 'score_column_name', 'column_name', 'ROW_GROUP_ROWS', 'LAZY_READ_BYTES', 'FORMAT_VERSION', 'EDGES_FILE', 'NODES_FILE', 'KINDS', 'NODE_COLUMNS', 'EDGE_COLUMNS', 'to_networkx', 'select', 'write_viewer', 'VIEW_FORMATS', 'VIEW_TOP_NODES', 'VIEW_EDGE_BUDGET', 'VIEW_EDGE_LIMIT', 'VIEW_EXTRA', 'MLPGraph', 'ExportOptions', 'DEFAULT_EXPORT', 'export_graph', 'read_graph', 'GraphFormatError', 'MODES', 'GATES', 'WEIGHTINGS', 'EXPORT_FORMATS', 'export_graph_from_safetensors', 'SafetensorsBlock', 'safetensors_index']
