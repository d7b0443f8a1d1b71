# bash completion for ssm-train, ssm-score, ssm-generate and ssm-embed (installed by meson into
# share/bash-completion/completions/ under each program's name). The options come from the
# program's own --help, so they never fall behind it; values of a few options are known here.
_ssm_complete() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    case $prev in
        --device) COMPREPLY=($(compgen -W "auto cpu cuda cuda:0" -- "$cur")); return ;;
        --per-base) COMPREPLY=($(compgen -W "logp entropy" -- "$cur")); return ;;
        --strand) COMPREPLY=($(compgen -W "forward both" -- "$cur")); return ;;
        --pool) COMPREPLY=($(compgen -W "mean max last" -- "$cur")); return ;;
        --context) COMPREPLY=($(compgen -W "record alone" -- "$cur")); return ;;
        --format) COMPREPLY=($(compgen -W "npy safetensors" -- "$cur")); return ;;
        --resume) COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --set|--length|--samples|--temperature|--top-k|--top-p|--seed|--threads|--window|--batch|\
        --chunk|--layer|--stop-after|--per-window|--flank|--prompt) return ;;
    esac
    if [[ $cur == -* ]]; then
        local opts
        opts=$("${COMP_WORDS[0]}" --help 2>/dev/null | grep -oE -- '--[a-z][a-z-]*' | sort -u)
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
        compopt -o filenames 2>/dev/null
    fi
}
complete -F _ssm_complete ssm-train ssm-score ssm-generate ssm-embed
