"""Where an export keeps its models between steps: the graph in memory, the weights on disk.

An export holds several versions of one model (exported, simplified, lowered) and an ONNX
Runtime session for two of them. Held whole, each version is another copy of the weights, and
a session built from serialised bytes is two more while it loads. ``DiskStore`` writes each
version once to a scratch folder with its weights as external data and hands back the graph
alone (a *skeleton*: tensors that name their bytes in the folder); sessions load the file, and
ONNX Runtime maps the weights instead of copying them out of a message. Because only the graph
is ever serialised, models above protobuf's 2 GiB limit pass through too.

``MemoryStore`` keeps models whole, for callers that lower small models in memory.
"""

from __future__ import annotations

from pathlib import Path

THRESHOLD = 1024  # bytes: smaller tensors (shapes, axes, scalars) stay in the graph, where shape inference reads them


class MemoryStore:
    """Models stay whole in memory; every method is the identity."""

    folder: Path | None = None

    def put(self, model, name: str):
        return model

    def path(self, model) -> Path | None:
        """The file a model is stored in: none here."""
        return None

    def source(self, model):
        """What a session is built from: the model itself."""
        return model

    def full(self, model):
        return model

    def loadable(self, model):
        """What ``onnxruntime.InferenceSession`` takes for ``model``."""
        return model.SerializeToString()


class DiskStore(MemoryStore):
    """Each model written once to ``folder``; the caller keeps only the skeleton it gets back."""

    def __init__(self, folder: Path, output_name: str = "model.onnx"):
        self.root = Path(folder)
        self.folder: Path | None = self.root
        self.output = self.root / "output" / output_name  # where ``write_output`` puts the result
        self._paths: dict[int, tuple[object, Path]] = {}  # id(skeleton) -> (skeleton, its file)
        self._reserved = 0

    def write_output(self, model) -> None:
        """The finished model written whole (weights beside it only above protobuf's limit), to
        be moved into place; done while no session holds the weights too."""
        from .pipeline import save_onnx

        self.output.parent.mkdir(exist_ok=True)
        save_onnx(self.full(model), self.output)

    def outputs(self) -> list[Path]:
        """What ``write_output`` wrote: the model and its weights file, if any."""
        return sorted(self.output.parent.iterdir()) if self.output.parent.exists() else []

    def put(self, model, name: str):
        """Write ``model`` as ``name.onnx`` with its large tensors in ``name.data`` (tensors
        already on disk keep their files) and return a fresh skeleton: the message ``model`` was
        keeps its memory until the caller drops it (protobuf frees a message's bytes with the
        whole message, not field by field)."""
        import onnx

        path = self.reserve(name)
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.stem}.data", size_threshold=THRESHOLD)
        return self.adopt(onnx.load_model(str(path), load_external_data=False), path)

    def reserve(self, name: str) -> Path:
        """A new file for a model called ``name``, for a writer that stores it itself (its
        weights in ``<stem>.data`` beside it): a data file is appended to, so never reuse one."""
        self._reserved += 1
        return self.root / f"{self._reserved:02d}-{name}.onnx"

    def adopt(self, skeleton, path: Path):
        """``skeleton``, the graph of the model written at ``path``, as a stored model."""
        self._paths[id(skeleton)] = (skeleton, path)
        return skeleton

    def path(self, model) -> Path | None:
        entry = self._paths.get(id(model))
        return entry[1] if entry is not None and entry[0] is model else None

    def source(self, model):
        """A stored model's file (ONNX Runtime resolves its weights beside it); anything else as it is."""
        return self.path(model) or model

    def loadable(self, model):
        path = self.path(model)
        return str(path) if path else model.SerializeToString()

    def full(self, model):
        """A copy of a stored model with its weights read back (for tools that need the bytes
        in the message, such as onnxsim); other models as they are."""
        import onnx

        if self.path(model) is None:
            return model
        whole = onnx.ModelProto()
        whole.CopyFrom(model)
        onnx.external_data_helper.load_external_data_for_model(whole, str(self.root))
        return whole
