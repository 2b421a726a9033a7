import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A claim on a SQLite file by one process, for a service whose replicas each own their partitions' state: two such
/// replicas on one file (a named volume shared by `--scale`) would each forget the other's partitions. An advisory
/// lock (`flock`) on `<file>.owner`, held while the process lives — the system lets it go when the process dies,
/// however it dies — so the second replica refuses to start, naming the file, instead of running half-right.
///
/// `flock` holds between processes of one machine, and of containers sharing a local volume; a network file system
/// may not honour it.
package final class OwnedDataFile: Sendable {
    /// The lock file's descriptor while the claim holds.
    private let descriptor: Mutex<Int32?>
    package let path: String

    /// The file is claimed by another process of this machine.
    package struct AlreadyOwned: Error, CustomStringConvertible {
        package var path: String
        package var hint: String
        package var description: String {
            "\(path) is in use by another replica; each replica needs a data directory of its own (\(hint))"
        }
    }

    /// Claims `databasePath` for this process; `hint` says, in the error, how to run replicas instead.
    package init(_ databasePath: String, hint: String) throws {
        path = databasePath + ".owner"
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw AlreadyOwned(path: databasePath, hint: hint)
        }
        descriptor = Mutex(fd)
    }

    /// Lets the file go before this object does (a test that stops a service and starts another on its file in one
    /// process); a process that ends lets it go anyway.
    package func release() {
        guard let fd = descriptor.withLock({ descriptor in defer { descriptor = nil }; return descriptor }) else { return }
        flock(fd, LOCK_UN)
        close(fd)
    }

    deinit { release() }
}
