import Foundation

/// Whether `text` occurs anywhere in the raw bytes of the SQLite database at `path` or its `-wal` file: live rows,
/// freed pages and old WAL frames alike. This is how tests prove that erased data left the files, not only the tables.
package func sqliteFilesContain(_ path: String, _ text: String) -> Bool {
    let needle = Data(text.utf8)
    return ["", "-wal"].contains { suffix in
        ((try? Data(contentsOf: URL(fileURLWithPath: path + suffix))) ?? Data()).range(of: needle) != nil
    }
}
