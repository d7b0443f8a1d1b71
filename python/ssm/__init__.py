"""ssm: selective state space models (Mamba) from Python, on libssm.

    import ssm
    run = ssm.train("recipes/dna.yaml", output="runs/py", set={"train.steps": 50})
    m = ssm.load(run)                                   # a run directory or a checkpoint
    s = m.score("ACGTTGCA")                             # s.logp, s.entropy: (n,) float32, nats
    e = m.embed("ACGTTGCA")                             # (d_model,) mean of the hidden states

Arrays are numpy arrays that libssm writes into directly (no copies); a failure raises
ssm.SsmError with libssm's message (ssm_last_error()). docs/python.md has the whole API.
"""
import ctypes
import os
from collections import namedtuple

import numpy as np

from ._lib import STEP_FN, lib

__version__ = "0.1.0"
__all__ = ["SsmError", "Model", "Scores", "Record", "Step", "load", "train", "set_threads"]


class SsmError(RuntimeError):
    """A libssm failure: str(e) is ssm_last_error(); e.status the ssm_status name."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _check(status):
    if status != 0:
        raise SsmError(lib.ssm_status_name(status).decode(), lib.ssm_last_error().decode())


def _ptr(a):
    return ctypes.c_void_p(a.ctypes.data) if a is not None else None


def set_threads(n):
    """CPU threads of libssm (and its BLAS); 0 = all cores."""
    lib.ssm_set_threads(int(n))


Scores = namedtuple("Scores", "logp entropy")
Scores.__doc__ = """Per position i of a sequence: logp[i] = log p(symbol i | the symbols before it)
and entropy[i] = the entropy of that prediction, in nats (NaN where a symbol is not scored)."""
Record = namedtuple("Record", "id logp entropy")
Step = namedtuple("Step", "step loss lr grad_norm")


class Model:
    """A trained model with its task (ssm.load): the task turns text into tokens and back and
    reads the files it scores (FASTA for dna, text for lm, WAV for audio)."""

    _h = None

    def __init__(self, path, device="cpu"):
        h = ctypes.c_void_p()
        _check(lib.ssmpy_load(os.fsencode(path), ctypes.byref(h)))
        self._h = h
        self._model = lib.ssmpy_model(h)
        info = (ctypes.c_int64 * 6)()
        lib.ssmpy_info(h, info)
        self.vocab_size, self.task_vocab, self.d_model, self.n_layer, self.n_params, self.bos = \
            (int(x) for x in info)
        self.task = lib.ssmpy_task_name(h).decode()
        self.symbol = lib.ssmpy_symbol(h).decode()
        dev = ctypes.c_int()
        _check(lib.ssm_parse_device(device.encode(), ctypes.byref(dev)))
        self.device = dev.value
        if dev.value >= 0:
            _check(lib.ssm_model_use_device(self._model, None, dev.value))

    def close(self):
        if self._h:
            lib.ssmpy_free(self._h)
            self._h = None

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<ssm.Model %s: %d layers x d_model %d, %d parameters>" % (
            self.task, self.n_layer, self.d_model, self.n_params)

    # ---- tokens ------------------------------------------------------------------------
    def encode(self, text):
        """The task's tokens of text (str or bytes): an int32 array, without BOS."""
        data = text.encode() if isinstance(text, str) else bytes(text)
        p, n = ctypes.POINTER(ctypes.c_int32)(), ctypes.c_size_t()
        _check(lib.ssmpy_encode(self._h, data, len(data), ctypes.byref(p), ctypes.byref(n)))
        try:
            return np.ctypeslib.as_array(p, (n.value,)).copy() if n.value else np.zeros(0, np.int32)
        finally:
            lib.ssmpy_free_buffer(p)

    def decode(self, tokens):
        """Tokens written out in the task's format (bases, text...), as str."""
        t = np.ascontiguousarray(tokens, dtype=np.int32)
        p, n = ctypes.c_void_p(), ctypes.c_size_t()
        _check(lib.ssmpy_decode(self._h, _ptr(t), t.size, ctypes.byref(p), ctypes.byref(n)))
        try:
            return ctypes.string_at(p, n.value).decode("utf-8", "replace")
        finally:
            lib.ssmpy_free_buffer(p)

    def _with_bos(self, seq):
        toks = self.encode(seq) if isinstance(seq, (str, bytes)) else np.asarray(seq, np.int32)
        return np.concatenate([np.array([self.bos], np.int32), toks])

    # ---- scoring -----------------------------------------------------------------------
    def _score_tokens(self, tokens, scored, window, entropy):
        """tokens (n + 1): BOS then the symbols -> Scores (n,), the state carried between windows."""
        n = tokens.size - 1
        tokens = np.ascontiguousarray(tokens, np.int32)
        targets = tokens[1:]
        if scored is not None:
            targets = np.where(np.asarray(scored) != 0, targets, -1).astype(np.int32)
        logp = np.empty(n, np.float32)
        ent = np.empty(n, np.float32) if entropy else None
        st = ctypes.c_void_p()
        _check(lib.ssm_state_create(lib.ssmpy_config(self._model), 1, ctypes.byref(st)))
        try:
            for a in range(0, n, window):
                b = min(n, a + window)
                # slices of contiguous arrays: libssm reads and writes them in place
                _check(lib.ssm_forward_score(self._model, _ptr(tokens[a:b]), _ptr(targets[a:b]), 1,
                                             b - a, st, _ptr(logp[a:b]),
                                             _ptr(ent[a:b]) if entropy else None))
        finally:
            lib.ssm_state_free(st)
        return Scores(logp, ent)

    def score(self, seq, window=4096, entropy=True):
        """Scores of a sequence: text for the task (str or bytes) or its tokens (no BOS)."""
        return self._score_tokens(self._with_bos(seq), None, window, entropy)

    def score_file(self, path, window=4096, entropy=True):
        """Scores of every record of a file the task reads (FASTA/FASTQ, text, WAV), one
        Record(id, logp, entropy) at a time."""
        reader = ctypes.c_void_p()
        _check(lib.ssmpy_open_records(self._h, os.fsencode(path), ctypes.byref(reader)))
        try:
            while True:
                rid, length, done = ctypes.c_char_p(), ctypes.c_size_t(), ctypes.c_int()
                toks = ctypes.POINTER(ctypes.c_int32)()
                mask = ctypes.POINTER(ctypes.c_uint8)()
                _check(lib.ssmpy_next_record(self._h, reader, ctypes.byref(rid), ctypes.byref(length),
                                             ctypes.byref(toks), ctypes.byref(mask), ctypes.byref(done)))
                if done.value:
                    return
                n = length.value
                # views of the task's arrays (valid until the next record): no copy
                tokens = np.ctypeslib.as_array(toks, (n + 1,))
                scored = np.ctypeslib.as_array(mask, (n,)) if mask else None
                s = self._score_tokens(tokens, scored, window, entropy)
                yield Record(rid.value.decode("utf-8", "replace"), s.logp, s.entropy)
        finally:
            lib.ssmpy_close_records(self._h, reader)

    # ---- hidden states and embeddings --------------------------------------------------
    def hidden(self, seq, layer=-1, window=4096):
        """Hidden states (n, d_model) float32 of a sequence: row i is the layer's output where
        symbol i is the input. layer 0..n_layer-1: the residual stream after that block; -1
        (or n_layer): the final norm's output, what the LM head reads."""
        if self.device >= 0:
            raise SsmError("SSM_ERR_UNSUPPORTED", "hidden states are kept on the CPU only: "
                           "load the model with device='cpu'")
        tokens = self._with_bos(seq)
        out = np.empty((tokens.size, self.d_model), np.float32)
        st = ctypes.c_void_p()
        _check(lib.ssm_state_create(lib.ssmpy_config(self._model), 1, ctypes.byref(st)))
        try:
            for a in range(0, tokens.size, window):
                b = min(tokens.size, a + window)
                _check(lib.ssm_forward(self._model, _ptr(tokens[a:b]), None, 1, b - a, st, None))
                _check(lib.ssm_model_hidden(self._model, int(layer), _ptr(out[a:b])))
        finally:
            lib.ssm_state_free(st)
        return out[1:]  # a view: the BOS row is dropped without a copy

    def embed(self, seq, layer=-1, pool="mean"):
        """One vector (d_model,) for a sequence: the mean, max or last of its hidden states."""
        h = self.hidden(seq, layer)
        if pool == "mean":
            return h.mean(axis=0)
        if pool == "max":
            return h.max(axis=0)
        if pool == "last":
            return h[-1].copy()
        raise ValueError("pool is mean, max or last, not %r" % (pool,))

    # ---- generation --------------------------------------------------------------------
    def generate(self, prompt="", length=100, temperature=1.0, top_k=0, seed=1):
        """Continue prompt by length symbols in step mode (constant memory per symbol) and
        return the generated part in the task's format. temperature 0: greedy."""
        tokens = self._with_bos(prompt)
        rng = np.random.default_rng(seed)
        ok = np.array([lib.ssmpy_can_generate(self._h, v) != 0 for v in range(self.task_vocab)])
        logits = np.empty(self.vocab_size, np.float32)
        st = ctypes.c_void_p()
        _check(lib.ssm_state_create(lib.ssmpy_config(self._model), 1, ctypes.byref(st)))
        out = np.empty(length, np.int32)
        try:
            # the prompt in one forward (all but its last token), then one step per token
            if tokens.size > 1:
                _check(lib.ssm_forward(self._model, _ptr(tokens[:-1]), None, 1, tokens.size - 1, st, None))
            tok = np.array([tokens[-1]], np.int32)
            for i in range(length):
                _check(lib.ssm_step(self._model, st, _ptr(tok), _ptr(logits)))
                z = np.where(ok, logits[:self.task_vocab].astype(np.float64), -np.inf)
                if temperature <= 0:
                    tok[0] = int(np.argmax(z))
                else:
                    if 0 < top_k < z.size:
                        z[z < np.sort(z)[-top_k]] = -np.inf
                    p = np.exp((z - z.max()) / temperature)
                    tok[0] = rng.choice(z.size, p=p / p.sum())
                out[i] = tok[0]
        finally:
            lib.ssm_state_free(st)
        return self.decode(out)


def load(path, device="cpu"):
    """A trained model: a run directory of ssm-train (or ssm.train) or a checkpoint file
    whose metadata holds its recipe. device: cpu, auto, cuda or cuda:N."""
    return Model(path, device)


def train(recipe=None, output=None, set=None, callback=None, force=False, resume=None, quiet=True):
    """ssm-train's run from a recipe (YAML file): the same loop, validation, checkpoints,
    metrics.jsonl and report.html. set: {"train.steps": 100, ...} overrides recipe keys.
    callback(ssm.Step(step, loss, lr, grad_norm)) runs after every step; a true return value
    stops the run (saved, as Ctrl-C does). resume: a run directory to continue. Returns the
    run directory."""
    sets = ["%s=%s" % (k, v) for k, v in (set or {}).items()]
    arr = (ctypes.c_char_p * max(1, len(sets)))(*[s.encode() for s in sets])
    raised = []

    def on_step(_ctx, step, loss, lr, grad_norm):
        try:
            return 1 if callback(Step(int(step), loss, lr, grad_norm)) else 0
        except BaseException as e:  # stop the run, re-raise once it has saved
            raised.append(e)
            return 1

    fn = STEP_FN(on_step) if callback else STEP_FN()
    run_dir = ctypes.create_string_buffer(4096)
    rc = lib.ssmpy_train(os.fsencode(recipe) if recipe else None, arr, len(sets),
                         os.fsencode(output) if output else None, int(force),
                         os.fsencode(resume) if resume else None, int(quiet), fn, None,
                         run_dir, len(run_dir))
    if raised:
        raise raised[0]
    if rc == 130:
        raise KeyboardInterrupt
    if rc not in (0, 143):
        raise SsmError("SSM_ERR", lib.ssm_last_error().decode())
    return os.fsdecode(run_dir.value)
