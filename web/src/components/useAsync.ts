import { useCallback, useEffect, useRef, useState } from "react";

export interface AsyncState<T> {
  data: T | undefined;
  error: unknown;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` whenever `deps` change; an answer that arrives late is dropped. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]): AsyncState<T> {
  const key = JSON.stringify(deps);
  const [state, setState] = useState<{ data?: T; error: unknown; key: string | null }>({
    error: null,
    key: null,
  });
  const [tick, setTick] = useState(0);
  const [pending, setPending] = useState(true);
  const latest = useRef(0);

  useEffect(() => {
    const call = ++latest.current;
    setPending(true);
    load().then(
      (data) => {
        if (call !== latest.current) return;
        setState({ data, error: null, key });
        setPending(false);
      },
      (error: unknown) => {
        if (call !== latest.current) return;
        setState((previous) => ({ data: previous.data, error, key }));
        setPending(false);
      },
    );
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key, tick]);

  const reload = useCallback(() => setTick((t) => t + 1), []);
  // What is held answers the deps it was loaded for: under new deps it is not
  // shown at all (no page lists one query's results under another's title), while
  // a reload of the same deps keeps it on screen until the fresh answer arrives.
  const current = state.key === key;
  return {
    data: current ? state.data : undefined,
    error: current ? state.error : null,
    loading: pending || !current,
    reload,
  };
}
